"""Counts the SQL statements each process of the suite sends to PostgreSQL, by the
``application_name`` of the connection (one per service), for ``bench/suite.py``.

Loaded only by the benchmark: ``bench/suite.py`` puts this folder first on the suite's
``PYTHONPATH`` and names a folder in ``FENGQIAO_BENCH_STATEMENTS``; Python then imports this module
at start-up in every process of the suite. Nothing in the services knows of it.

It wraps the asyncpg methods every statement goes through — the prepared statements SQLAlchemy
runs, ``Connection.execute`` (BEGIN, COMMIT, SAVEPOINT and the group commit's direct inserts),
``executemany`` and ``COPY`` — and counts each execution by the server (an ``executemany`` of n
rows is n executions in one round trip) by connection name and statement text. Every half second
the counts are written to ``<folder>/<pid>.json``; the benchmark reads them at the start and the
end of the load.

With ``FENGQIAO_BENCH_STATEMENT_CPU`` set as well, each statement's backend CPU is read around it
(``/proc/<backend pid>/schedstat``, nanoseconds, as ``bench/statement_cpu.py`` does in one
process) and summed by the same key into ``<folder>/<pid>.cpu``: what each statement costs the
database, not only how often it runs. Two small file reads a statement: for finding where the
backends' CPU goes, not for the runs whose CPU is compared.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
from typing import Any

_FOLDER = os.environ.get("FENGQIAO_BENCH_STATEMENTS")
_CPU = bool(os.environ.get("FENGQIAO_BENCH_STATEMENT_CPU"))
_TEXT_CHARS = 160  # enough to tell statements apart in the report


def _key(conn: Any, query: str) -> tuple[str, str]:
    try:
        app = str(conn.get_settings().application_name)
    except Exception:  # closed, or no such setting reported
        app = "?"
    return app, " ".join(query.split())[:_TEXT_CHARS]


def _backend_ns(pid: int) -> int:
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open(f"/proc/{pid}/schedstat", encoding="ascii") as f,
    ):
        return int(f.read().split()[0])
    return 0


def _install(folder: str) -> None:
    import asyncpg
    from asyncpg import prepared_stmt

    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    cpu: collections.Counter[tuple[str, str]] = collections.Counter()
    inside: set[int] = set()  # connections inside a measured statement (asyncpg nests calls)

    def count(conn: Any, query: str, times: int = 1) -> None:
        counts[_key(conn, query)] += times

    def began(conn: Any) -> tuple[int, int] | None:
        """The backend's pid and CPU so far, if ``conn``'s statement is to be measured (the
        outermost of asyncpg's nested calls only)."""
        if not _CPU or id(conn) in inside:
            return None
        try:
            pid = conn.get_server_pid()
        except Exception:  # closed
            return None
        inside.add(id(conn))
        return pid, _backend_ns(pid)

    async def measured(conn: Any, query: str, call: Any) -> Any:
        """Await ``call``, its backend's CPU added to ``query``'s."""
        start = began(conn)
        if start is None:
            return await call
        try:
            return await call
        finally:
            inside.discard(id(conn))
            cpu[_key(conn, query)] += _backend_ns(start[0]) - start[1]

    connection = asyncpg.Connection
    plain_execute = connection.execute

    async def execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if not args:  # with arguments it goes through ``_execute``, counted there
            count(self, query)
        return await measured(self, query, plain_execute(self, query, *args, **kwargs))

    bound_execute = connection._execute

    async def _execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        count(self, query)
        return await measured(self, query, bound_execute(self, query, *args, **kwargs))

    many = connection._executemany

    async def _executemany(self: Any, query: str, args: Any, *rest: Any, **kwargs: Any) -> Any:
        # One round trip, but the server executes (and plans) the statement once per row.
        count(self, query, len(args) if hasattr(args, "__len__") else 1)
        return await measured(self, query, many(self, query, args, *rest, **kwargs))

    copy_records = connection.copy_records_to_table

    async def copy_records_to_table(self: Any, table_name: str, **kwargs: Any) -> Any:
        count(self, f"COPY {table_name}")
        return await measured(self, f"COPY {table_name}", copy_records(self, table_name, **kwargs))

    statement = prepared_stmt.PreparedStatement
    do_execute = statement._PreparedStatement__do_execute  # type: ignore[attr-defined]

    async def __do_execute(self: Any, executor: Any) -> Any:
        count(self._connection, self._query)
        return await measured(self._connection, self._query, do_execute(self, executor))

    connection.execute = execute  # type: ignore[method-assign]
    connection._execute = _execute  # type: ignore[method-assign]
    connection._executemany = _executemany  # type: ignore[method-assign]
    connection.copy_records_to_table = copy_records_to_table  # type: ignore[method-assign]
    statement._PreparedStatement__do_execute = __do_execute  # type: ignore[attr-defined]

    path = os.path.join(folder, f"{os.getpid()}.json")

    def dump(what: collections.Counter[tuple[str, str]], path: str) -> None:
        for _ in range(3):  # the event loop may add a key while we copy
            with contextlib.suppress(RuntimeError):
                snapshot = list(what.items())
                break
        else:
            return
        rows = [[app, text, n] for (app, text), n in snapshot]
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(rows, out)
        os.replace(tmp, path)

    def keep_dumping() -> None:
        while True:
            threading.Event().wait(0.5)
            with contextlib.suppress(OSError):
                dump(counts, path)
                if _CPU:
                    dump(cpu, os.path.join(folder, f"{os.getpid()}.cpu"))

    threading.Thread(target=keep_dumping, name="statement-counts", daemon=True).start()


if _FOLDER:
    with contextlib.suppress(ImportError):
        _install(_FOLDER)
