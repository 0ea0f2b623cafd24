"""Database helpers: engines for SQLite (WAL, the embedded default) and PostgreSQL (asyncpg),
per-service SQLModel bases, schemas; group commit for the hot write path is in
``shared/groupcommit.py``."""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Column, DateTime, String, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import registry as orm_registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class Key(String):
    """A key column (ids, hashes, codes, normalized keys) compared as bytes.

    The database's collation may be a linguistic one (``C.UTF-8`` is one to PostgreSQL 15,
    ``en_US.utf8`` the official image's): every B-tree comparison of such a key then copies both
    strings and calls ``strcoll``, some 12 % of evaluation's backend CPU in the live apply and
    ~2 us of the ~17 us intake's tickets cost a row stored. These keys are compared for equality
    or paged in a fixed order, never sorted for a reader: ASCII ids order alike in ``C`` and
    ``C.UTF-8``, and a keyset page's ``>`` and ``ORDER BY`` use the same collation. On PostgreSQL
    the column is created ``COLLATE "C"`` (evaluation's migration 0010_collate, intake's
    intake_keys_collate_c); nothing else changes: a cast to the type (``shared.bulk``'s arrays and
    record sets) stays plain ``VARCHAR`` and takes the column's collation when compared with it.
    SQLite compares bytes already."""

    cache_ok = True


@compiles(Key, "postgresql")
def _key_ddl(type_: Key, compiler: Any, **kw: Any) -> str:
    spec: str = compiler.visit_VARCHAR(type_, **kw)
    if isinstance(kw.get("type_expression"), Column):  # a column's definition, not a cast
        spec += ' COLLATE "C"'
    return spec


class AwareDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every database: stored as UTC, read back aware.

    SQLite has no time zones and would hand back naive values; this refuses naive input and
    restores UTC on the way out.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass a timezone-aware value")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_JSON_SCALARS = frozenset((str, int, bool, type(None)))
_STR_KEYS = frozenset((str,))


def dumps_json(value: Any) -> str:
    """A JSON column's text: UTF-8 as it is, compact, written by orjson (the stdlib escaped every
    CJK character to six ASCII bytes and cost ~7x the CPU), reading back as ``json.dumps`` would.

    orjson writes only values made of plain dicts with str keys, lists, tuples, str, int, bool,
    None and finite floats. Anything else goes to ``json.dumps(value)`` exactly as before, so
    it keeps that outcome: NaN and infinities written as the stdlib writes them (PostgreSQL
    refuses them), non-str keys turned to strings, subclasses (enum members) by their value,
    and a TypeError for datetimes, UUIDs, plain Enum members and the like — orjson would write
    those where the stdlib refuses them. So are ints beyond 64 bits, lone surrogates and nesting
    deeper than orjson's limit: orjson refuses them, the stdlib writes them as it did.
    """
    try:
        plain = plain_json(value)
    except RecursionError:  # a cycle or very deep nesting: the stdlib's own error, as before
        plain = False
    if plain:
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass
    return json.dumps(value)


def plain_json(value: Any) -> bool:
    """Whether orjson writes ``value`` as ``json.dumps`` would read back (see ``dumps_json``):
    the scalars tested inline, a call only for a nested container."""
    kind = type(value)
    if kind is dict:
        if not {*map(type, value)} <= _STR_KEYS:
            return False
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return kind in _JSON_SCALARS or (kind is float and math.isfinite(value))
    for item in items:
        item_kind = type(item)
        if item_kind in _JSON_SCALARS or (item_kind is float and math.isfinite(item)):
            continue
        if not plain_json(item):
            return False
    return True


def service_base(name: str) -> type[SQLModel]:
    """A SQLModel base with its own metadata, so each service's tables stay in its own database."""
    return type(f"{name.title()}Base", (SQLModel,), {}, registry=orm_registry())  # type: ignore[call-arg]


def create_engine(settings: ServiceSettings, *, readonly: bool = False) -> AsyncEngine:
    """An async engine for the service's database, tuned for its dialect.

    On SQLite a ``readonly`` engine opens deferred transactions, so its readers never queue
    behind (or block) the writers' IMMEDIATE transactions; WAL lets them read meanwhile.
    """
    if settings.is_sqlite:
        path = settings.sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            settings.database_url,
            connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000},
            pool_size=max(2, min(settings.database_pool_size, 8)),
            json_serializer=dumps_json,
            hide_parameters=True,  # a failed statement's error must not log citizens' data
        )
        _configure_sqlite(engine, settings, readonly=readonly)
        return engine
    # The application name makes each service's sessions recognisable in pg_stat_activity.
    server_settings = {
        "application_name": settings.database_application_name
        or f"fengqiao-{settings.service_name}",
        # Every statement is prepared once per connection and run many times with arrays of a
        # batch's ids. A generic plan is fixed while the tables are still small: the inbox
        # look-up then kept `event_id = ANY($2)` as a filter over every row of the consumer
        # instead of an index condition, and the look-up grew with the table (0.3 s and
        # rising within minutes under load). Planned for its parameters each time, it stays an
        # index probe whatever the table held at start.
        "plan_cache_mode": "force_custom_plan",
        # A table the planner has no statistics for (a server without autovacuum, a surge
        # before it analyses) gets row estimates that grow with it, and past `jit_above_cost`
        # every run of a statement was compiled first: intake's lifecycle read of a fetch,
        # 2 ms of work, took 12.5 ms at 209,000 rows, 10 ms of it JIT (docs/benchmarks.md).
        # No statement of a service runs long enough for compiling to pay.
        "jit": "off",
    }
    if settings.database_schema:
        server_settings["search_path"] = settings.database_schema
    connect_args: dict[str, Any] = {"server_settings": server_settings}
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        connect_args=connect_args,
        json_serializer=dumps_json,
        hide_parameters=True,  # a failed statement's error must not log citizens' data
    )
    _discard_closed_connections(engine)
    return engine


_PLANNED_ONCE = "fengqiao_planned_once"  # in a pooled connection's info: switched by plan_once


async def plan_once(conn: AsyncConnection, driver: Any) -> None:
    """Switch a PostgreSQL connection held for statements whose best plan cannot depend on their
    values to plan each prepared statement once (its generic plan), instead of for every run's
    values as ``create_engine`` sets (against the inbox look-up's table-scan generic plan).

    For a connection its holder keeps checked out: ``plan_each_run`` must restore the setting
    before it goes back to the pool, where other statements would otherwise get it."""
    await driver.execute("SET plan_cache_mode = force_generic_plan")
    conn.info[_PLANNED_ONCE] = True


async def plan_each_run(conn: AsyncConnection, driver: Any) -> bool:
    """Undo ``plan_once`` (if it was done) before the connection is returned to the pool:
    ``RESET`` restores the value the session started with. False if that failed (the caller
    discards the connection)."""
    try:
        if conn.info.pop(_PLANNED_ONCE, False):
            await driver.execute("RESET plan_cache_mode")
    except Exception:
        return False
    return True


# PostgreSQL's binary timestamp: microseconds since 2000-01-01 UTC, and its two infinities.
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_INT64 = struct.Struct("!q")
_INFINITY, _NEGATIVE_INFINITY = 2**63 - 1, -(2**63)
# What asyncpg reads the infinities as, and the only values it writes them from.
_INFINITE, _NEGATIVE_INFINITE = datetime.max, datetime.min


_REMEMBERED_TIMES = 64
"""How many time objects ``_time_codec`` remembers besides the last (then it starts afresh)."""


def _time_codec() -> tuple[Callable[[datetime], bytes], Callable[[bytes], datetime]]:
    """``timestamptz`` in PostgreSQL's binary form, as asyncpg's own codec writes and reads it
    (a test holds them equal), but remembering the values written, by the time object: a
    group's rows carry the same few time objects in column after column (its time of
    acceptance, its events' time, its audit rows' time), and asyncpg's codec converts each anew
    (~0.5 µs a value, ~6 a ticket). The last value is tested first; a few others are kept by
    identity (each entry holds its object, so no other object can take its ``id``) — with the
    last alone, a batch file's audit rows, alternating between the events' time and the time of
    acceptance, converted both on every row."""
    last: list[Any] = [None, b""]
    known: dict[int, tuple[datetime, bytes]] = {}

    def encode(value: datetime) -> bytes:
        if value is last[0]:
            return last[1]  # type: ignore[no-any-return]
        entry = known.get(id(value))
        if entry is not None and entry[0] is value:
            data = entry[1]
        else:
            if value.tzinfo is None:
                if value == _INFINITE:
                    data = _INT64.pack(_INFINITY)
                elif value == _NEGATIVE_INFINITE:
                    data = _INT64.pack(_NEGATIVE_INFINITY)
                else:
                    # a naive time is local, as asyncpg has it
                    data = _micros(value.astimezone(UTC))
            else:
                data = _micros(value)
            if len(known) >= _REMEMBERED_TIMES:
                known.clear()
            known[id(value)] = (value, data)
        last[0], last[1] = value, data
        return data

    def decode(data: bytes) -> datetime:
        (micros,) = _INT64.unpack(data)
        if micros == _INFINITY:
            return _INFINITE
        if micros == _NEGATIVE_INFINITY:
            return _NEGATIVE_INFINITE
        return _PG_EPOCH + timedelta(microseconds=micros)

    return encode, decode


# asyncpg writes the first and last instants a datetime holds (in UTC) as the infinities.
_LAST_INSTANT, _FIRST_INSTANT = 252_455_615_999_999_999, -63_082_281_600_000_000


def _micros(value: datetime) -> bytes:
    delta = value - _PG_EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if micros == _LAST_INSTANT:
        micros = _INFINITY
    elif micros == _FIRST_INSTANT:
        micros = _NEGATIVE_INFINITY
    return _INT64.pack(micros)


_REMEMBERS_TIMES = "fengqiao_remembers_times"  # in a pooled connection's info


async def remember_times(conn: AsyncConnection, driver: Any) -> None:
    """Have a PostgreSQL connection held for a writer's groups (the group committer's) convert
    each ``timestamptz`` value it writes once however often a group repeats it
    (``_time_codec``). ``forget_times`` must restore asyncpg's codec before the connection goes
    back to the pool."""
    encode, decode = _time_codec()
    await driver.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=encode, decoder=decode, format="binary"
    )
    conn.info[_REMEMBERS_TIMES] = True


async def forget_times(conn: AsyncConnection, driver: Any) -> bool:
    """Undo ``remember_times`` (if it was done); False if that failed (the caller discards the
    connection)."""
    try:
        if conn.info.pop(_REMEMBERS_TIMES, False):
            await driver.reset_type_codec("timestamptz", schema="pg_catalog")
    except Exception:
        return False
    return True


def _discard_closed_connections(engine: AsyncEngine) -> None:
    """Hand out no pooled connection whose socket the server has closed (a restart, an idle
    timeout, ``pg_terminate_backend``): the pool drops it and checks out another.

    This replaces ``pool_pre_ping``, which costs three round trips (BEGIN, a query, ROLLBACK) on
    every checkout — measured at ~6 % of intake's CPU and a round trip's latency before each
    look-up. asyncpg learns of a closed socket as soon as the event loop sees it, so the check is
    a flag read; a statement that still meets a dead connection fails, its connection is
    invalidated and the caller's retry (the group committer's unit-by-unit pass) gets a new one.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("connection closed by the server")


def _configure_sqlite(engine: AsyncEngine, settings: ServiceSettings, *, readonly: bool) -> None:
    """WAL for concurrent readers; IMMEDIATE transactions so writers queue on the busy timeout
    instead of failing on a lock upgrade; driver-level transactions off so SAVEPOINT works."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint every ~40 MB of WAL instead of ~4 MB: index pages rewritten by many commits
        # are copied back once, not ten times (measured: ~30 % less CPU and wall per inserted
        # row). Durability is unchanged; the WAL file stays that size between checkpoints.
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        if settings.sqlite_cache_mib is not None:
            # Pages kept in memory per connection, in KiB (a negative size): SQLite's default
            # is 2 MiB, a few thousand of a large table's pages; every other page a statement
            # touches is read from the OS again.
            cursor.execute(f"PRAGMA cache_size=-{int(settings.sqlite_cache_mib) * 1024}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (responses are built from them)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database cannot answer a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def ensure_schema(settings: ServiceSettings) -> None:
    """Create the service's PostgreSQL schema if one is configured (no-op on SQLite)."""
    if settings.is_sqlite or not settings.database_schema:
        return
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.database_schema}"'))
    finally:
        await engine.dispose()
