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
"""

from __future__ import annotations

import collections
import contextlib
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


def report(items: int, unit: str) -> None:
    """The measured statements by backend CPU: calls, rows, ms in all and µs per ``unit``."""
    total = sum(_cpu.values())
    per = total / 1e3 / items
    print(f"backend CPU inside statements: {total / 1e9:.3f} s, {per:.1f} µs/{unit}")
    print(f"{'µs/' + unit:>9} {'ms':>8} {'calls':>6} {'rows':>7}  statement")
    for key, ns in _cpu.most_common():
        print(f"{ns / 1e3 / items:9.2f} {ns / 1e6:8.1f} {_calls[key]:6d} {_rows[key]:7d}  {key}")
