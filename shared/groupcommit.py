"""Group commit for the hot write path: the requests that queued while the previous transaction
was committing share one transaction, each answered only after it commits; a unit that fails
fails alone (the group is retried unit by unit), so nothing is half-stored.

One module over 400 lines on purpose: the driver-level insert paths and the committer share
their failure handling (which unit failed, a held SQLite lock, a closed connection)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import ARRAY, JSON, Boolean, String, Table
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
)

from shared.db import (
    AwareDateTime,
    dumps_json,
    forget_times,
    plain_json,
    plan_each_run,
    plan_once,
    remember_times,
)

log = logging.getLogger(__name__)


Work = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Same:
    """One value every row of a ``Columns`` block holds in a column."""

    value: Any


@dataclass(frozen=True, slots=True)
class Columns:
    """Rows of one table given a column at a time: ``values[key]`` holds each row's value of
    that column in row order, or ``Same(v)`` where every row holds ``v``. Stored exactly as the
    rows it stands for (``dicts``) would be; a producer that has its rows' values a field at a
    time (a batch file's tickets, their events) hands them over without a dict a row, and a
    value every row shares goes through its bind processor once."""

    table: Table
    count: int
    values: dict[str, Sequence[Any] | Same]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.values)

    def column(self, key: str) -> list[Any]:
        """Every row's value of ``key``."""
        v = self.values[key]
        return [v.value] * self.count if isinstance(v, Same) else list(v)

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts (what Core inserts)."""
        keys = self.keys
        return [
            dict(zip(keys, row, strict=True)) for row in zip(*map(self.column, keys), strict=True)
        ]


Inserts = Sequence[tuple[Table, dict[str, Any]] | Columns]


class _Blocks(list[Columns]):
    """A table's ``Columns`` blocks of one group, all with the same keys; ``len`` is rows."""

    def __len__(self) -> int:
        return sum(block.count for block in self)

    @property
    def keys(self) -> tuple[str, ...]:
        return self[0].keys


TableRows = list[dict[str, Any]] | _Blocks
"""A table's rows of one group: dicts, or ``Columns`` blocks."""


def _by_table(units: Sequence[Inserts]) -> dict[Table, TableRows]:
    """The units' rows by table, tables in order of first appearance: a table's ``Columns``
    blocks as they are, its dict rows as a list; a table given both ways, all as dicts."""
    found: dict[Table, list[Any]] = {}
    blocks: set[Table] = set()  # tables given a block
    for inserts in units:
        for item in inserts:
            if type(item) is Columns:
                found.setdefault(item.table, []).append(item)
                blocks.add(item.table)
            else:
                table, row = item  # type: ignore[misc]
                found.setdefault(table, []).append(row)
    out: dict[Table, TableRows] = dict(found)
    for table in blocks:
        items = found[table]
        if all(type(item) is Columns for item in items):
            out[table] = _Blocks(items)
        else:
            out[table] = [
                r for item in items for r in (item.dicts() if type(item) is Columns else [item])
            ]
    return out


def _as_dicts(rows: dict[Table, TableRows]) -> dict[Table, list[dict[str, Any]]]:
    """Every row as a dict, by table (what Core inserts)."""
    return {
        table: [r for block in found for r in block.dicts()]
        if isinstance(found, _Blocks)
        else found
        for table, found in rows.items()
    }


@dataclass(slots=True)
class _Unit:
    inserts: Inserts
    work: Work | None
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Lane:
    """One committer connection and the group it is committing."""

    conn: AsyncConnection | None = None
    driver: Any = None
    in_flight: list[_Unit] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _TablePlan:
    """How to bind one table's rows on the driver: its columns and SQLAlchemy's own bind
    processors for them (so values are stored exactly as a Core insert would store them)."""

    table: Table
    keys: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    array_types: tuple[str, ...]  # PostgreSQL: the element type each column's array is cast to
    # Per column: the same processing a column at a time (``_columnwise``), or None; empty for
    # none at all.
    columnwise: tuple[Callable[[list[Any]], list[Any] | None] | None, ...] = ()


class DirectInserts:
    """Plain inserts straight on the driver connection, one statement (PostgreSQL) or one trip
    to the connection's thread (SQLite) per group.

    SQLAlchemy Core spends tens of microseconds a row on compiling, per-row type processing and
    its async adapter, and needs several event-loop round trips per transaction; under load each
    of those waits behind every other request's work, so a group commit took ~25 ms. Here:

    * PostgreSQL: ``INSERT … SELECT … FROM unnest($1::t[])`` per table — one array of the
      table's own row type, each row a tuple — all tables of the group chained in one statement
      with data-modifying CTEs: atomic on its own (implicit transaction), one round trip, no
      BEGIN/COMMIT; a group of ``copy_min_rows`` rows or more (batch files) by binary ``COPY``
      per table in one transaction instead. One array per column (``row_arrays=False``) stores
      the same, but asyncpg's array encoder checks every element against ``collections.abc``
      (a Python-level ``isinstance`` for every value of the group), where an array of rows
      checks each row once;
    * SQLite: ``BEGIN IMMEDIATE``, one ``executemany`` per table and ``COMMIT`` in a single call on
      aiosqlite's thread, so the write lock is held only while SQLite works, not across event
      loop turns (the other worker process waits on it with SQLite's sleep-and-retry backoff).

    Values go through the bind processors SQLAlchemy itself would use for the engine's dialect
    (AwareDateTime's UTC check, JSON serialization, SQLite's datetime strings). Rows this cannot
    express exactly (array columns, Python-side defaults for a column left out, rows of one
    table with different keys) go through Core.
    """

    def __init__(self, dialect: Any, *, copy_min_rows: int = 1000, row_arrays: bool = True) -> None:
        self._dialect = dialect
        # Groups of at least this many rows (every table's together) go by COPY on PostgreSQL.
        self.copy_min_rows = copy_min_rows
        self.row_arrays = row_arrays
        # PostgreSQL: each table's columns in its row type's order, read from the catalogue.
        self._attributes: dict[Table, tuple[str, ...]] = {}
        # Per plan: for each attribute of the row type, the index of its key in the plan (or
        # None: left NULL in the row, and not inserted); None where the keys are the row type.
        self._orders: dict[_TablePlan, tuple[int | None, ...] | None] = {}
        self._postgres = dialect.name == "postgresql"
        self._sqlite = dialect.name == "sqlite"
        self._plans: dict[tuple[Table, tuple[str, ...]], _TablePlan | None] = {}
        self._statements: dict[tuple[tuple[_TablePlan, ...], bool], str] = {}

    @property
    def supported(self) -> bool:
        return self._postgres or self._sqlite

    def plan(self, table: Table, keys: tuple[str, ...]) -> _TablePlan | None:
        cache_key = (table, keys)
        if cache_key not in self._plans:
            self._plans[cache_key] = self._make_plan(table, keys)
        return self._plans[cache_key]

    def _make_plan(self, table: Table, keys: tuple[str, ...]) -> _TablePlan | None:
        d = self._dialect
        if any(c.default is not None for c in table.columns if c.key not in keys):
            return None  # Core fills Python-side defaults of the columns a row leaves out
        processors: list[Callable[[Any], Any] | None] = []
        columnwise: list[ColumnProcess | None] = []
        array_types: list[str] = []
        for key in keys:
            column = table.columns.get(key)
            if column is None:
                return None
            impl = column.type.dialect_impl(d)
            if isinstance(column.type, ARRAY) or isinstance(impl, ARRAY):
                return None  # unnest would flatten it
            process = processor_of(impl, d)
            processors.append(process)
            columnwise.append(_columnwise(impl, d, process))
            if self._postgres:
                # Strings go in as text and are checked by the column on assignment: an explicit
                # cast to varchar(n) would truncate silently where Core raises.
                base = (
                    "text" if isinstance(impl, String) else column.type.compile(dialect=d).lower()
                )
                array_types.append(base)
        return _TablePlan(table, keys, tuple(processors), tuple(array_types), tuple(columnwise))

    def group_plans(self, rows_by_table: Mapping[Table, TableRows]) -> list[_TablePlan] | None:
        plans = []
        for table, rows in rows_by_table.items():
            if isinstance(rows, _Blocks):
                keys = rows.keys
                if any(block.keys != keys for block in rows):
                    return None  # blocks of different columns: Core fills the gaps
            else:
                keys = tuple(rows[0])
                # Rows made by one dict display have their keys in one order: their tuples of
                # keys, compared in C (a str key mostly by identity), settle it without a set
                # comparison of each row's keys; rows in another order are compared as sets.
                if any(map(keys.__ne__, map(tuple, rows))) and any(
                    len(r) != len(keys) or r.keys() != rows[0].keys() for r in rows
                ):
                    return None  # mixed shapes: Core knows how to fill the gaps
            plan = self.plan(table, keys)
            if plan is None:
                return None
            plans.append(plan)
        return plans

    def _postgres_statement(self, plans: tuple[_TablePlan, ...], rows: bool) -> str:
        key = (plans, rows)
        sql = self._statements.get(key)
        if sql is not None:
            return sql
        prep = self._dialect.identifier_preparer
        inserts = []
        n = 0
        for plan in plans:
            table = prep.format_table(plan.table)
            columns = ", ".join(prep.quote(plan.table.columns[k].name) for k in plan.keys)
            if rows:
                n += 1
                inserts.append(
                    f"INSERT INTO {table} ({columns}) SELECT {columns} FROM unnest(${n}::{table}[])"
                )
                continue
            arrays = []
            for t in plan.array_types:
                n += 1
                arrays.append(f"${n}::{t}[]")
            inserts.append(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({', '.join(arrays)})"
            )
        *first, last = inserts
        sql = (
            "WITH " + ", ".join(f"w{i} AS ({ins})" for i, ins in enumerate(first)) + " " + last
            if first
            else last
        )
        self._statements[key] = sql
        return sql

    def _sqlite_statement(self, plan: _TablePlan) -> str:
        key = ((plan,), False)
        sql = self._statements.get(key)
        if sql is None:
            prep = self._dialect.identifier_preparer
            columns = ", ".join(prep.quote(k) for k in plan.keys)
            marks = ", ".join("?" * len(plan.keys))
            sql = f"INSERT INTO {prep.format_table(plan.table)} ({columns}) VALUES ({marks})"
            self._statements[key] = sql
        return sql

    async def run(
        self,
        driver: Any,
        plans: list[_TablePlan],
        rows_by_table: Mapping[Table, TableRows],
    ) -> None:
        """Insert every row of the group and commit, or raise having stored nothing."""
        if self._postgres and sum(len(r) for r in rows_by_table.values()) >= self.copy_min_rows:
            await self._copy(driver, plans, rows_by_table)
            return
        if self._postgres and self.row_arrays:
            args: list[Any] = []
            for plan in plans:
                order = await self._order(driver, plan)
                args.append(_records(plan, rows_by_table[plan.table], order))
            try:
                await driver.execute(self._postgres_statement(tuple(plans), True), *args)
            except BaseException:
                # A column added or dropped while the service runs makes the remembered order
                # stale: read the row types again for the next group.
                self._forget(plans)
                raise
            return
        if self._postgres:
            args = []
            for plan in plans:
                rows = rows_by_table[plan.table]
                for key, proc in zip(plan.keys, plan.processors, strict=True):
                    args.append(_column(rows, key, proc, None))
            await driver.execute(self._postgres_statement(tuple(plans), False), *args)
            return
        batches = [
            (self._sqlite_statement(plan), _records(plan, rows_by_table[plan.table]))
            for plan in plans
        ]
        await in_sqlite_thread(driver, _sqlite_transaction, batches)

    def _forget(self, plans: list[_TablePlan]) -> None:
        """Drop the remembered row types of the plans' tables."""
        tables = {plan.table for plan in plans}
        for table in tables:
            self._attributes.pop(table, None)
        for remembered in [p for p in self._orders if p.table in tables]:
            del self._orders[remembered]

    async def _order(self, driver: Any, plan: _TablePlan) -> tuple[int | None, ...] | None:
        """Where each attribute of the table's row type comes from in the plan's keys (None
        for the whole: the keys are the row type, in its order)."""
        if plan in self._orders:
            return self._orders[plan]
        table = plan.table
        attributes = self._attributes.get(table)
        if attributes is None:
            names = await driver.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                self._dialect.identifier_preparer.format_table(table),
            )
            attributes = self._attributes[table] = tuple(r[0] for r in names)
        position = {table.columns[k].name: i for i, k in enumerate(plan.keys)}
        order: tuple[int | None, ...] | None = tuple(position.get(a) for a in attributes)
        if order == tuple(range(len(plan.keys))):
            order = None
        self._orders[plan] = order
        return order

    async def _copy(
        self,
        driver: Any,
        plans: list[_TablePlan],
        rows_by_table: Mapping[Table, TableRows],
    ) -> None:
        """PostgreSQL: a large group's rows by binary ``COPY``, one per table, in one
        transaction. The server takes ``COPY`` rows for less work than an ``INSERT … SELECT``
        of unnested arrays, and on a machine the database shares with the service that work
        is the service's too; the few more round trips matter little for thousands of rows."""
        async with driver.transaction():
            for plan in plans:
                await driver.copy_records_to_table(
                    plan.table.name,
                    schema_name=plan.table.schema,
                    columns=list(plan.keys),
                    records=_records(plan, rows_by_table[plan.table]),
                )


# SQLAlchemy's storage format for SQLite's DATETIME, the one ``_sqlite_utc_text`` writes.
_SQLITE_DATETIME = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


def _sqlite_utc_text(impl: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """For ``AwareDateTime`` on SQLite in the default storage format: its bind processor (to
    UTC, then SQLAlchemy's text of the fields) as one ``isoformat`` call for an aware
    ``datetime`` — the same text (a test holds them equal), without the dict of seven fields and
    the format per value; anything else goes through the processor itself. None for other
    types.

    The last time written and its text are kept: a group's rows mostly carry the same time
    object in a column (the group's ``now``, each event's times), mapped one after the other,
    and its text is taken again instead of formatted anew (~1–3 µs a value; a ticket on SQLite
    writes seven). The pair is replaced as one tuple, so a processor shared by threads never
    reads a time with another's text."""
    if not (
        type(impl) is AwareDateTime
        and type(impl.impl) is SQLITE_DATETIME
        and impl.impl._storage_format == _SQLITE_DATETIME
        and impl.impl._reg is None
    ):
        return None
    slow = impl.bind_processor(dialect)
    assert slow is not None

    last: list[tuple[Any, str]] = [(object(), "")]

    def process(value: Any) -> Any:
        kept = last[0]
        if kept[0] is value:
            return kept[1]
        if type(value) is datetime and value.utcoffset() is not None:
            # "YYYY-MM-DD HH:MM:SS.ffffff+00:00" less its offset
            text = value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
            last[0] = (value, text)
            return text
        return slow(value)

    return process


def _postgres_utc(impl: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """For ``AwareDateTime`` on a driver that binds datetimes itself (asyncpg): its processor,
    less the call for a time already in ``UTC`` or none (``astimezone(UTC)`` returns such a
    time itself); anything else goes through the processor. None for other types."""
    if type(impl) is not AwareDateTime or impl.impl_instance.bind_processor(dialect) is not None:
        return None
    slow = impl.bind_processor(dialect)
    assert slow is not None

    def process(value: Any) -> Any:
        if value is None or (type(value) is datetime and value.tzinfo is UTC):
            return value
        return slow(value)

    return process


def _native_bool(impl: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """For ``Boolean`` on a database with a native boolean: its processor (strict, then
    ``bool``), less the call for ``True``, ``False`` or None, which it returns as they are;
    anything else goes through the processor. None for other types."""
    if (
        not isinstance(impl, Boolean)
        or type(impl).bind_processor is not Boolean.bind_processor
        or not dialect.supports_native_boolean
    ):
        return None
    slow = impl.bind_processor(dialect)
    assert slow is not None

    def process(value: Any) -> Any:
        if value is True or value is False or value is None:
            return value
        return slow(value)

    return process


def processor_of(impl: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """What a value of a column's type (its ``dialect_impl``) goes through before the driver:
    SQLAlchemy's bind processor, or the shortcut that gives the same at less cost; None where
    values go as they are."""
    return _shortcut(impl, dialect) or impl.bind_processor(dialect)


def _shortcut(impl: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """A bind processor that gives what SQLAlchemy's gives for the common values at less cost
    (a test holds each equal to it), or None where there is none."""
    if dialect.name == "sqlite":
        return _sqlite_utc_text(impl, dialect)
    if dialect.name == "postgresql":
        return _postgres_utc(impl, dialect) or _native_bool(impl, dialect)
    return None


_JSON_CONTAINERS = frozenset({dict, list})
_JSON_SCALARS = frozenset({str, int, bool, type(None)})  # as ``plain_json`` takes them
# Columns shorter than this go through their processors value by value: for a row or two the
# call per value costs less than the column's checks.
_COLUMNWISE_MIN_ROWS = 8

ColumnProcess = Callable[[list[Any]], list[Any] | None]


def _json_texts(column: list[Any]) -> list[Any] | None:
    """A JSON column's texts, where the engine writes JSON by ``dumps_json`` and each value is a
    plain dict or list: orjson's text of each (what ``dumps_json`` writes for such values),
    written by ``map`` with no Python call per value through SQLAlchemy's processor and
    ``dumps_json``. None for anything else (None, the NULL markers, values orjson would not
    write as the stdlib would, values orjson refuses): the column goes through the processor."""
    try:
        if not _plain_column(column):
            return None
        return list(map(bytes.decode, map(orjson.dumps, column)))
    except (RecursionError, orjson.JSONEncodeError):
        return None


def _plain_column(column: list[Any]) -> bool:
    """Whether every value of ``column`` is a dict or list ``plain_json`` holds plain. A column
    of dicts (or of lists) is checked at once: its values' types as one set made in C (``map``
    and ``chain``), ``plain_json`` called only on the values themselves where one is not a
    str, int, bool or None (a float, a container)."""
    kinds = set(map(type, column))
    if kinds == {dict}:
        # Keys go unchecked: orjson refuses any key but an exact str (the column then goes
        # through the processor), where ``plain_json`` holds such a dict not plain.
        values = list(chain.from_iterable(map(dict.values, column)))
    elif kinds == {list}:
        values = list(chain.from_iterable(column))
    else:
        return kinds <= _JSON_CONTAINERS and plain_json(column)
    return set(map(type, values)) <= _JSON_SCALARS or plain_json(values)


def _columnwise(
    impl: Any, dialect: Any, process: Callable[[Any], Any] | None
) -> ColumnProcess | None:
    """For a PostgreSQL JSON column written by ``dumps_json`` through SQLAlchemy's own JSON
    processor, its processing a column at a time (``_json_texts``); None for other columns.
    Times, flags and bytes are left to their processors: a check of a whole column's types
    cost about what the call per value did."""
    if (
        process is not None
        and dialect.name == "postgresql"
        and isinstance(impl, JSON)
        and type(impl).bind_processor is JSON.bind_processor
        and type(impl)._make_bind_processor is JSON._make_bind_processor
        and dialect._json_serializer is dumps_json
        and impl._str_impl.bind_processor(dialect) is None
    ):
        return _json_texts
    return None


def _records(
    plan: _TablePlan, rows: TableRows, order: tuple[int | None, ...] | None = None
) -> list[tuple[Any, ...]]:
    """A table's rows as tuples in the plan's column order, through its bind processors: a
    column at a time (a list per column, each processor mapped over its column, the columns
    zipped into rows), not a generator per row, which cost more than the values themselves.
    A JSON column (``plan.columnwise``) is written a column at a time, without a Python call
    per value; a ``Same`` column of a ``Columns`` block is processed once.
    With ``order``, in that order instead: for each place the index of a key, or None (NULL)."""
    count = len(rows)
    wise = plan.columnwise if count >= _COLUMNWISE_MIN_ROWS else ()
    columns = [
        _column(rows, key, process, wise[i] if wise else None)
        for i, (key, process) in enumerate(zip(plan.keys, plan.processors, strict=True))
    ]
    if order is not None:
        nulls = [None] * count
        columns = [nulls if i is None else columns[i] for i in order]
    return list(zip(*columns, strict=True)) if columns else [() for _ in range(count)]


def _column(
    rows: TableRows,
    key: str,
    process: Callable[[Any], Any] | None,
    by_column: ColumnProcess | None,
) -> list[Any]:
    """Every row's value of ``key`` through the column's processing."""
    if not isinstance(rows, _Blocks):
        return _processed([row[key] for row in rows], process, by_column)
    out: list[Any] = []
    for block in rows:
        v = block.values[key]
        if isinstance(v, Same):
            value = v.value if process is None else process(v.value)
            out.extend([value] * block.count)
        else:
            out.extend(_processed(list(v), process, by_column))
    return out


def _processed(
    column: list[Any], process: Callable[[Any], Any] | None, by_column: ColumnProcess | None
) -> list[Any]:
    if process is None:
        return column
    whole = None if by_column is None else by_column(column)
    return list(map(process, column)) if whole is None else whole


async def in_sqlite_thread(driver: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(sqlite3_connection, *args)`` on an aiosqlite connection's own thread, in one hop.

    aiosqlite runs every call on its connection's thread and wakes the event loop with each
    result; a transaction of several calls waits several loop turns (each many milliseconds
    under load) while holding SQLite's write lock. Its ``_execute`` is the runner every one of
    its public calls goes through (present from 0.17 on; ``aiosqlite>=0.20`` is required).
    """
    return await driver._execute(fn, driver._conn, *args)


def _sqlite_transaction(conn: Any, batches: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    """On aiosqlite's thread: one IMMEDIATE transaction for the whole group."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in batches:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _write_lock_timeout(exc: BaseException) -> bool:
    """SQLite's write lock stayed with another connection past the busy timeout."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig)


def _as_operational_error(exc: Exception) -> Exception:
    """The driver's error as SQLAlchemy's, as the Core path would have raised it."""
    if isinstance(exc, DBAPIError):
        return exc
    return OperationalError("BEGIN IMMEDIATE", None, exc)


def _a_unit_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is one unit's failure, not the committer's own task being cancelled.

    A unit's work may raise ``CancelledError`` because something it awaited was cancelled under
    it; let through, that would end the committer and leave every later caller waiting forever.
    """
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0
    return isinstance(exc, Exception)


def _as_unit_error(exc: BaseException) -> Exception:
    """A unit's failure as an exception its caller can be answered with."""
    if isinstance(exc, Exception):
        return exc
    return RuntimeError(f"the unit of work was cancelled ({type(exc).__name__})")


class GroupCommitter:
    """Many concurrent requests, one transaction: each caller is answered only after it commits.

    A unit is either plain inserts (merged per table into one multi-row insert for the whole
    group, written straight on the driver) or a ``work`` coroutine run on the shared connection
    (then the group goes through SQLAlchemy Core). If any unit fails, the group is rolled back
    and every unit is retried alone through Core, so one bad request cannot sink its neighbours,
    nothing is half-stored, and the culprit gets SQLAlchemy's exception (``IntegrityError`` for a
    unique clash).

    Each lane keeps one connection checked out for its lifetime (no pool checkout, and on
    PostgreSQL no pre-ping round trips, per group); after a failure it is returned to the pool
    and a fresh one is checked out for the next group. With ``lanes=2`` (PostgreSQL) a second
    connection takes the next group while the first waits for its commit to be flushed, so the
    process prepares and answers instead of waiting; on SQLite one lane (one writer per process).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 256,
        on_commit: Callable[[int], None] | None = None,
        direct: bool = True,
        copy_min_rows: int = 1000,
        row_arrays: bool = True,
        lanes: int = 1,
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Unit] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._lanes = [_Lane() for _ in range(max(1, lanes))]
        direct_inserts = DirectInserts(
            engine.dialect, copy_min_rows=copy_min_rows, row_arrays=row_arrays
        )
        self._direct = direct_inserts if direct and direct_inserts.supported else None
        self.batches = 0
        self.units = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(lane), name=f"group-commit-{i}")
            for i, lane in enumerate(self._lanes)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        pending = [unit for lane in self._lanes for unit in lane.in_flight]
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for unit in pending:
            if not unit.future.done():
                unit.future.set_exception(RuntimeError("service is shutting down"))
        for lane in self._lanes:
            lane.in_flight = []
            await self._release(lane)

    async def submit(
        self,
        *,
        inserts: Inserts = (),
        work: Work | None = None,
    ) -> Any:
        """Queue a unit of writes; return once its transaction has committed."""
        return await self.enqueue(inserts=inserts, work=work)

    def enqueue(self, *, inserts: Inserts = (), work: Work | None = None) -> asyncio.Future[Any]:
        """Queue a unit of writes without waiting: the future is done once it has committed
        (or failed alone). Units queued together, with no await between them, share a group."""
        if not self._tasks:
            raise RuntimeError("group committer is not running")
        unit = _Unit(inserts=inserts, work=work)
        self._queue.put_nowait(unit)
        return unit.future

    async def _run(self, lane: _Lane) -> None:
        # Each lane checks out its connection at once: a pool that requests and look-ups drain
        # later must not starve a lane that has not committed yet. A database that is down now
        # is tried again with the lane's first group.
        with contextlib.suppress(Exception):
            await self._connection(lane)
        while True:
            group = [await self._queue.get()]
            while len(group) < self._max_batch and not self._queue.empty():
                group.append(self._queue.get_nowait())
            lane.in_flight = group
            try:
                results = await self._commit(group, lane)
            except BaseException as exc:
                if not _a_unit_failed(exc):
                    raise  # the committer itself is stopping
                await self._release(lane)  # it may be the connection that broke
                if isinstance(exc, Exception) and _write_lock_timeout(exc):
                    # No unit is at fault, and one by one each would wait out the busy timeout
                    # again: the whole group is answered with the error (a 503 to retry).
                    for unit in group:
                        if not unit.future.done():
                            unit.future.set_exception(_as_operational_error(exc))
                else:  # isolate the culprit(s)
                    log.debug("group of %d failed (%s); retrying units alone", len(group), exc)
                    await self._commit_alone(group, lane)
            else:
                for unit, result in zip(group, results, strict=True):
                    if not unit.future.done():
                        unit.future.set_result(result)
                self._committed(len(group))
            lane.in_flight = []

    async def _connection(self, lane: _Lane) -> AsyncConnection:
        if lane.conn is None:
            conn = await self._engine.connect()
            try:
                raw = await conn.get_raw_connection()
            except BaseException:
                await conn.close()
                raise
            if self._direct is not None and self._engine.dialect.name == "postgresql":
                # The group's inserts read arrays of rows, a plan no values can change: planned
                # once, not for each group (~8 % of their backends' CPU). The lane runs nothing
                # else but the intake's work units (a callback's revision read on its unique
                # (ticket_id, revision) index, blobs inserted on their key) and the pending
                # trigger, none of whose plans depends on the values either. Its groups repeat
                # their times in every row: each converted once (``remember_times``).
                try:
                    await plan_once(conn, raw.driver_connection)
                    await remember_times(conn, raw.driver_connection)
                except BaseException:
                    await conn.invalidate()
                    await conn.close()
                    raise
            lane.conn, lane.driver = conn, raw.driver_connection
        return lane.conn

    async def _release(self, lane: _Lane) -> None:
        """Give the lane's connection back to the pool (it resets or discards a broken one),
        planning each run again and converting times as the pool's others do."""
        conn, driver, lane.conn, lane.driver = lane.conn, lane.driver, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if not (await plan_each_run(conn, driver) and await forget_times(conn, driver)):
                    await conn.invalidate()
                await conn.close()

    async def _commit(self, group: list[_Unit], lane: _Lane) -> list[Any]:
        conn = await self._connection(lane)
        by_table = _by_table([unit.inserts for unit in group])
        if self._direct is not None and all(u.work is None for u in group):
            if not by_table:
                return [None] * len(group)
            plans = self._direct.group_plans(by_table)
            if plans is not None:
                await self._direct.run(lane.driver, plans, by_table)
                return [None] * len(group)
        return await self._commit_core(conn, group, _as_dicts(by_table))

    async def _commit_core(
        self,
        conn: AsyncConnection,
        group: list[_Unit],
        by_table: dict[Table, list[dict[str, Any]]],
    ) -> list[Any]:
        results: list[Any] = []
        async with conn.begin():
            for unit in group:
                results.append(await unit.work(conn) if unit.work is not None else None)
            for table, rows in by_table.items():
                await conn.execute(table.insert(), rows)
        return results

    async def _commit_alone(self, group: list[_Unit], lane: _Lane) -> None:
        for unit in group:
            by_table = _as_dicts(_by_table([unit.inserts]))
            try:
                conn = await self._connection(lane)
                try:
                    (result,) = await self._commit_core(conn, [unit], by_table)
                except BaseException:
                    if conn.invalidated or conn.closed:
                        await self._release(lane)
                    raise
            except BaseException as exc:
                if not _a_unit_failed(exc):
                    raise
                if not unit.future.done():
                    unit.future.set_exception(_as_unit_error(exc))
            else:
                if not unit.future.done():
                    unit.future.set_result(result)
                self._committed(1)

    def _committed(self, count: int) -> None:
        self.batches += 1
        self.units += count
        if self._on_commit is not None:
            self._on_commit(count)
