"""PostgreSQL backend CPU by statement, for a benchmark run in this process against a local
server: what each statement the services send costs the database, not only how many there are
(``bench/statement_count`` counts them across the suite's processes).

``install()`` wraps the asyncpg methods every statement goes through — ``Connection.execute``
(BEGIN, COMMIT, the group commit's direct inserts), ``_execute`` (``fetch`` and friends),
``_executemany``, ``copy_records_to_table`` and the prepared statements SQLAlchemy runs — and,
while ``measuring`` is on, reads the serving backend's CPU time (``/proc/<pid>/schedstat``,
nanoseconds) before and after each, adding the difference to the statement's text. A backend
serves one connection and a statement is awaited to its end, so the difference is that
statement's work (parse, plan, execute, index and WAL inserts, a commit's flush less its wait).
``report()`` prints the statements by CPU, with calls and rows.

``generic_inserts()`` is an experiment, not a measurement: every connection that sends a group
commit's direct insert (``INSERT … SELECT … FROM unnest($n…)``, alone or in a ``WITH`` of
several) gets ``plan_cache_mode = force_generic_plan`` first, once. The services' sessions plan
every prepared statement for its parameters (``shared.db.create_engine``), so the group's insert
is planned anew each time, although its plan (a function scan of the arrays into each table)
cannot depend on them. Run with and without it, a benchmark tells what a group committer that
switched its own connections would save.

``python -m bench.statement_cpu --schema S`` measures the same apart, on a schema an in-process
run left (``bench.intake_inprocess --keep-schema``): a group's insert (its tickets, events and
audit rows, fresh ids and times each round) and a repeat look-up, each sent alternately on two
sessions that differ only in ``plan_cache_mode``, the backend's CPU read around each statement.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_TEXT_CHARS = 110

measuring = False
_cpu: collections.Counter[str] = collections.Counter()
_calls: collections.Counter[str] = collections.Counter()
_rows: collections.Counter[str] = collections.Counter()
_inside: set[int] = set()  # connections inside a measured statement (asyncpg nests its calls)


def _backend_ns(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return 0


def _key(query: str) -> str:
    return " ".join(query.split())[:_TEXT_CHARS]


async def _measured(conn: Any, text: str, rows: int, call: Any) -> Any:
    """Await ``call`` and charge its backend's CPU to ``text`` (outermost wrapper only)."""
    if not measuring or id(conn) in _inside:
        return await call
    pid = conn.get_server_pid()
    _inside.add(id(conn))
    start = _backend_ns(pid)
    try:
        return await call
    finally:
        _inside.discard(id(conn))
        key = _key(text)
        _cpu[key] += _backend_ns(pid) - start
        _calls[key] += 1
        _rows[key] += rows


def install() -> None:
    """Wrap asyncpg's statement methods (once)."""
    import asyncpg
    from asyncpg import prepared_stmt

    connection = asyncpg.Connection
    if getattr(connection, "_bench_statement_cpu", False):
        return
    connection._bench_statement_cpu = True  # type: ignore[attr-defined]
    plain_execute = connection.execute
    bound_execute = connection._execute
    many = connection._executemany
    copy_records = connection.copy_records_to_table
    statement = prepared_stmt.PreparedStatement
    do_execute = statement._PreparedStatement__do_execute  # type: ignore[attr-defined]

    async def execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        return await _measured(self, query, 1, plain_execute(self, query, *args, **kwargs))

    async def _execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        return await _measured(self, query, 1, bound_execute(self, query, *args, **kwargs))

    async def _executemany(self: Any, query: str, args: Any, *rest: Any, **kwargs: Any) -> Any:
        n = len(args) if hasattr(args, "__len__") else 1
        return await _measured(self, query, n, many(self, query, args, *rest, **kwargs))

    async def copy_records_to_table(self: Any, table_name: str, **kwargs: Any) -> Any:
        records = kwargs.get("records")
        n = len(records) if hasattr(records, "__len__") else 1
        return await _measured(
            self, f"COPY {table_name}", n, copy_records(self, table_name, **kwargs)
        )

    async def __do_execute(self: Any, executor: Any) -> Any:
        return await _measured(self._connection, self._query, 1, do_execute(self, executor))

    connection.execute = execute  # type: ignore[method-assign]
    connection._execute = _execute  # type: ignore[method-assign]
    connection._executemany = _executemany  # type: ignore[method-assign]
    connection.copy_records_to_table = copy_records_to_table  # type: ignore[method-assign]
    statement._PreparedStatement__do_execute = __do_execute  # type: ignore[attr-defined]


_DIRECT_INSERTS = ("INSERT INTO ", "WITH w0 AS (INSERT INTO ")
_LOOK_UP = "SELECT 0 AS found_by, "


def _planned_once(method: str, prefixes: tuple[str, ...]) -> None:
    """Wrap ``asyncpg.Connection.<method>``: a connection that sends a statement starting with
    one of ``prefixes`` (with parameters) is switched to generic plans first, once."""
    import weakref

    import asyncpg

    connection = asyncpg.Connection
    marker = f"_bench_planned_once_{method}_{len(prefixes)}_{prefixes[0]}"
    if getattr(connection, marker, False):
        return
    setattr(connection, marker, True)
    switched: weakref.WeakSet[Any] = weakref.WeakSet()
    plain = getattr(connection, method)
    plain_execute = connection.execute

    async def wrapped(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if args and self not in switched and query.startswith(prefixes):
            switched.add(self)
            await plain_execute(self, "SET plan_cache_mode = force_generic_plan")
        return await plain(self, query, *args, **kwargs)

    setattr(connection, method, wrapped)


def generic_inserts() -> None:
    """Have each connection that sends a direct insert plan its statements generically (once
    per connection, before its first such insert)."""
    _planned_once("execute", _DIRECT_INSERTS)


def generic_look_ups() -> None:
    """An experiment as ``generic_inserts``, for the repeat look-up: its statement written with
    each key as a range of one value and the key leading its order (``ranged_look_up``), and
    each connection that sends it switched to generic plans, once."""
    from services.intake import repeat_lookup

    if getattr(repeat_lookup, "_bench_ranged", False):
        return
    original = repeat_lookup._postgres_candidates
    repeat_lookup._postgres_candidates = functools.cache(  # type: ignore[assignment]
        lambda per_key: ranged_look_up(original(per_key))
    )
    repeat_lookup._bench_ranged = True  # type: ignore[attr-defined]
    _planned_once("fetch", (_LOOK_UP,))


def ranged_look_up(statement: str) -> str:
    """The look-up with ``key = k.v`` written ``key >= k.v AND key <= k.v`` and ordered by the
    key, then the time: the same rows, but its generic plan is each key's index whatever the
    statistics (an equality makes the key's order redundant, so the time's index gives the same
    order; a range of a parameter is estimated at the planner's default)."""
    from services.intake.repeat_lookup import _KEY_COLUMNS

    branches = statement.split(" UNION ALL ")
    assert len(branches) == len(_KEY_COLUMNS), statement
    return " UNION ALL ".join(
        branch.replace(f"WHERE {key} = k.v", f"WHERE {key} >= k.v AND {key} <= k.v").replace(
            "ORDER BY received_at DESC", f"ORDER BY {key} DESC, received_at DESC"
        )
        for branch, key in zip(branches, _KEY_COLUMNS, strict=True)
    )


def report(items: int, unit: str) -> None:
    """The measured statements by backend CPU: calls, rows, ms in all and µs per ``unit``."""
    total = sum(_cpu.values())
    per = total / 1e3 / items
    print(f"backend CPU inside statements: {total / 1e9:.3f} s, {per:.1f} µs/{unit}")
    print(f"{'µs/' + unit:>9} {'ms':>8} {'calls':>6} {'rows':>7}  statement")
    for key, ns in _cpu.most_common():
        print(f"{ns / 1e3 / items:9.2f} {ns / 1e6:8.1f} {_calls[key]:6d} {_rows[key]:7d}  {key}")


PLAN_MODES = ("force_custom_plan", "force_generic_plan")


async def _columns(conn: Any, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [r[0] for r in rows]


async def plan_modes(url: str, schema: str, group: int, rounds: int) -> None:
    """Print the backend CPU of a group's insert and of a look-up under each plan cache mode."""
    import asyncpg

    from services.intake.repeat_lookup import _postgres_candidates

    conns = {
        mode: await asyncpg.connect(
            url, server_settings={"search_path": schema, "plan_cache_mode": mode}
        )
        for mode in PLAN_MODES
    }
    first = conns[PLAN_MODES[0]]
    tickets = await _columns(first, "tickets")
    rest = {
        table: [c for c in await _columns(first, table) if c != "id"]
        for table in ("outbox", "audit_trail")
    }
    names = {t: ", ".join(c) for t, c in {"tickets": tickets, **rest}.items()}
    insert = (
        f"WITH w0 AS (INSERT INTO tickets ({names['tickets']}) SELECT {names['tickets']} FROM "
        f"unnest($1::tickets[])), w1 AS (INSERT INTO outbox ({names['outbox']}) SELECT "
        f"{names['outbox']} FROM unnest($2::outbox[])) INSERT INTO audit_trail "
        f"({names['audit_trail']}) SELECT {names['audit_trail']} FROM unnest($3::audit_trail[])"
    )
    stored = await first.fetch(f"SELECT * FROM tickets ORDER BY received_at LIMIT {group}")
    events = await first.fetch(f"SELECT {names['outbox']} FROM outbox LIMIT {group}")
    audits = await first.fetch(f"SELECT {names['audit_trail']} FROM audit_trail LIMIT {group}")
    at = {c: tickets.index(c) for c in ("ticket_id", "external_id", "received_at")}
    created_at = rest["outbox"].index("created_at")
    newest = stored[-1]
    look_up = _postgres_candidates(20)
    until = datetime.now(UTC)
    keys = ([newest["citizen_hash"]], [], [newest["address_key"]], until - timedelta(30), until)
    run = uuid.uuid4().hex[:8]  # this run's ids: a schema is measured more than once
    spent = {(mode, kind): 0 for mode in PLAN_MODES for kind in ("insert", "look-up")}
    for n in range(rounds):
        for mode in PLAN_MODES if n % 2 else PLAN_MODES[::-1]:
            conn = conns[mode]
            now = datetime.now(UTC)
            rows = []
            for i, row in enumerate(stored):
                values = list(row.values())
                values[at["ticket_id"]] = values[at["external_id"]] = f"{run}.{n}{mode[6]}-{i}"
                values[at["received_at"]] = now
                rows.append(tuple(values))
            outbox = []
            for event in events:
                fields = list(event.values())
                fields[created_at] = now
                outbox.append((None, *fields))  # the id the sequence gives
            pid = conn.get_server_pid()
            start = _backend_ns(pid)
            await conn.execute(insert, rows, outbox, [(None, *a.values()) for a in audits])
            middle = _backend_ns(pid)
            await conn.fetch(look_up, *keys)
            spent[mode, "insert"] += middle - start
            spent[mode, "look-up"] += _backend_ns(pid) - middle
    for mode in PLAN_MODES:
        print(
            f"{mode}: insert {spent[mode, 'insert'] / 1e3 / rounds / group:.1f} µs a ticket, "
            f"look-up {spent[mode, 'look-up'] / 1e3 / rounds:.1f} µs"
        )
    for conn in conns.values():
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="a group's insert and a look-up by plan mode")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--schema", required=True, help="left by intake_inprocess --keep-schema")
    parser.add_argument("--group", type=int, default=16, help="tickets a group")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(plan_modes(args.postgres, args.schema, args.group, args.rounds))


if __name__ == "__main__":
    main()
