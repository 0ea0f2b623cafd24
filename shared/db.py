"""Database helpers: engines for SQLite (WAL, the embedded default) and PostgreSQL (asyncpg),
per-service SQLModel bases, and group commit for the hot write path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Table, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import registry as orm_registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


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
        )
        _configure_sqlite(engine, settings, readonly=readonly)
        return engine
    # The application name makes each service's sessions recognisable in pg_stat_activity.
    server_settings = {
        "application_name": settings.database_application_name
        or f"fengqiao-{settings.service_name}"
    }
    if settings.database_schema:
        server_settings["search_path"] = settings.database_schema
    connect_args: dict[str, Any] = {"server_settings": server_settings}
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _configure_sqlite(engine: AsyncEngine, settings: ServiceSettings, *, readonly: bool) -> None:
    """WAL for concurrent readers; IMMEDIATE transactions so writers queue on the busy timeout
    instead of failing on a lock upgrade; driver-level transactions off so SAVEPOINT works."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
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


Work = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(slots=True)
class _Unit:
    inserts: Sequence[tuple[Table, dict[str, Any]]]
    work: Work | None
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitter:
    """Many concurrent requests, one transaction: each caller is answered only after it commits.

    A unit is either plain inserts (merged per table into one executemany for the whole group)
    or a ``work`` coroutine run on the shared connection. If any unit fails, the group is rolled
    back and every unit is retried alone, so one bad request cannot sink its neighbours and
    nothing is half-stored.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 256,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Unit] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.units = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            unit = self._queue.get_nowait()
            if not unit.future.done():
                unit.future.set_exception(RuntimeError("service is shutting down"))

    async def submit(
        self,
        *,
        inserts: Sequence[tuple[Table, dict[str, Any]]] = (),
        work: Work | None = None,
    ) -> Any:
        """Queue a unit of writes; return once its transaction has committed."""
        if self._task is None:
            raise RuntimeError("group committer is not running")
        unit = _Unit(inserts=inserts, work=work)
        self._queue.put_nowait(unit)
        return await unit.future

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self._max_batch and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                results = await self._commit(group)
            except Exception as exc:  # the group failed: isolate the culprit(s)
                log.debug("group of %d failed (%s); retrying units alone", len(group), exc)
                await self._commit_alone(group)
            else:
                for unit, result in zip(group, results, strict=True):
                    if not unit.future.done():
                        unit.future.set_result(result)
                self._committed(len(group))

    async def _commit(self, group: list[_Unit]) -> list[Any]:
        results: list[Any] = []
        async with self._engine.begin() as conn:
            by_table: dict[Table, list[dict[str, Any]]] = {}
            for unit in group:
                results.append(await unit.work(conn) if unit.work is not None else None)
                for table, row in unit.inserts:
                    by_table.setdefault(table, []).append(row)
            for table, rows in by_table.items():
                await conn.execute(table.insert(), rows)
        return results

    async def _commit_alone(self, group: list[_Unit]) -> None:
        for unit in group:
            try:
                (result,) = await self._commit([unit])
            except Exception as exc:
                if not unit.future.done():
                    unit.future.set_exception(exc)
            else:
                if not unit.future.done():
                    unit.future.set_result(result)
                self._committed(1)

    def _committed(self, count: int) -> None:
        self.batches += 1
        self.units += count
        if self._on_commit is not None:
            self._on_commit(count)
