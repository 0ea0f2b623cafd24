"""Test helpers: databases on SQLite and PostgreSQL, services run in-process over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy import text

from fengqiao.registry import upgrade_async
from shared import db
from shared.auth import mint_token
from shared.broker import free_port
from shared.bus import create_topics, topic_name
from shared.events import Event, encode
from shared.settings import BusSettings, ServiceSettings

S = TypeVar("S", bound=ServiceSettings)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("FENGQIAO_TEST_POSTGRES_URL", DEFAULT_PG)


_PG_PROBES: dict[str, tuple[str | None, str]] = {}

# Secrets of the test suite: on PostgreSQL the settings refuse the development defaults.
TEST_TOKEN_SECRET = "test-suite-token-secret-0123456789abcdef"
TEST_GATEWAY_SECRET = "test-suite-gateway-secret-0123456789abcdef"
TEST_SECRETS: dict[str, Any] = {
    "auth_token_secret": TEST_TOKEN_SECRET,
    "auth_gateway_secret": TEST_GATEWAY_SECRET,
    "citizen_hash_salt": "test-suite-citizen-salt",
}


def as_role(
    role: str, *, subject: str = "tester", unit: str | None = None, ttl_s: float = 6 * 3600
) -> dict[str, str]:
    """Request headers of a caller with a token for ``role`` (signed with the suite's secret;
    long-lived, as module constants are minted once per run)."""
    token = mint_token(TEST_TOKEN_SECRET, role=role, subject=subject, unit=unit, ttl_s=ttl_s)
    return {"authorization": f"Bearer {token}"}


async def postgres_url(url: str) -> tuple[str | None, str]:
    """The PostgreSQL URL if a server answers there, else None and the reason (probed once)."""
    if url not in _PG_PROBES:
        try:
            conn = await asyncpg.connect(url, timeout=3)
            await conn.close()
            _PG_PROBES[url] = (url, "")
        except Exception as exc:
            _PG_PROBES[url] = (None, f"no PostgreSQL at {url}: {type(exc).__name__}: {exc}")
    return _PG_PROBES[url]


async def open_database(kind: str, sqlite_dir: Callable[[], Path]) -> Database:
    """A database for a ``sqlite`` / ``postgres`` parametrised fixture; skips the test, naming the
    reason, when no PostgreSQL server answers."""
    if kind == "sqlite":
        return Database("sqlite", str(sqlite_dir()))
    url, reason = await postgres_url(PG_URL)
    if url is None:
        pytest.skip(reason)
    return Database("postgres", url)


@dataclass
class Database:
    """Where one test's services keep their data."""

    kind: str  # sqlite | postgres
    root: str  # a directory for SQLite, a server URL for PostgreSQL
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    schemas: list[str] = field(default_factory=list)

    def settings_for(self, service: str) -> dict[str, Any]:
        if self.kind == "sqlite":
            return {
                **TEST_SECRETS,
                "database_url": f"sqlite+aiosqlite:///{Path(self.root) / service}.db",
            }
        schema = f"t_{self.token}_{service}"
        self.schemas.append(schema)
        url = "postgresql+asyncpg://" + self.root.split("://", 1)[1]
        return {
            **TEST_SECRETS,
            "database_url": url,
            "database_schema": schema,
            "database_application_name": f"fengqiao-t{self.token}-{service}",
        }

    async def drop(self) -> None:
        if self.kind != "postgres" or not self.schemas:
            return
        conn = await asyncpg.connect(self.root)
        try:
            # A session a cancelled task left behind would block DROP SCHEMA on its locks.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                f"AND application_name LIKE 'fengqiao-t{self.token}-%'"
            )
            await conn.execute("SET lock_timeout = '10s'")
            for schema in self.schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def never_analysed(
    database: Database,
    settings: ServiceSettings,
    service: str,
    table: str,
    fill: Any,
    params: dict[str, Any],
) -> AsyncIterator[Any]:
    """PostgreSQL: ``service``'s schema migrated, ``table`` filled by ``fill`` and never analysed
    (autovacuum off for it, whatever the server's setting), and an engine on it; the test then
    counts its transaction's scans with ``scans_in_transaction``."""
    if database.kind != "postgres":
        pytest.skip("the plans are PostgreSQL's")
    await upgrade_async(service, settings)
    engine = db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            await conn.execute(fill, params)
            reltuples = await conn.scalar(
                text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": table},
            )
            assert reltuples in (-1, 0), "the table was analysed"
        yield engine
    finally:
        await engine.dispose()


async def scans_in_transaction(session: Any, table: str) -> tuple[int, int]:
    """The sequential and index scans of ``table`` in the session's transaction so far."""
    row = await session.execute(
        text(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables "
            "WHERE relid = CAST(:t AS regclass)"
        ),
        {"t": table},
    )
    seq_scans, index_scans = row.one()
    return int(seq_scans), int(index_scans)


def bus_settings(bootstrap: str, prefix: str) -> dict[str, Any]:
    """Broker settings for tests: short group timeouts (a join takes half the session timeout)."""
    return {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic_prefix": prefix,
        "kafka_session_timeout_ms": 2000,
        "kafka_heartbeat_interval_ms": 500,
        "broker_check_interval_ms": 200,
        "outbox_poll_interval_ms": 50,
        "consumer_backoff_ms": 20,
        "consumer_backoff_max_ms": 100,
        "log_json": False,
        "log_level": "WARNING",
    }


async def make_settings(
    cls: type[S], *, service: str, database: Database, bootstrap: str, prefix: str, **extra: Any
) -> S:
    """Settings for one service, with its database migrated to head."""
    values = {**bus_settings(bootstrap, prefix), **database.settings_for(service), **extra}
    settings = cls(**values)
    await upgrade_async(service, settings)
    return settings


async def isolated_settings(
    cls: type[S], *, service: str, database: Database, bootstrap: str, **extra: Any
) -> S:
    """Settings for one service on a topic prefix of its own (topics created, database migrated),
    so tests sharing the broker never read each other's events."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    await create_topics(BusSettings(**bus_settings(bootstrap, prefix)))
    return await make_settings(
        cls, service=service, database=database, bootstrap=bootstrap, prefix=prefix, **extra
    )


async def publish_event(
    producer: AIOKafkaProducer, settings: ServiceSettings, topic: str, event: Event
) -> None:
    """Send one event to a service's topic as its producer would (CloudEvents binary mode)."""
    record = encode(event)
    await producer.send_and_wait(
        topic_name(settings, topic), value=record.value, key=record.key, headers=record.headers
    )


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll an async predicate until it holds; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class RunningService:
    name: str
    app: FastAPI
    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


@contextlib.asynccontextmanager
async def serve(name: str, app: FastAPI) -> AsyncIterator[RunningService]:
    """Run an app under uvicorn on a free loopback port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign,attr-defined]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not start")
        await asyncio.sleep(0.02)
    try:
        yield RunningService(name, app, f"http://127.0.0.1:{port}", server, task)
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({task}, timeout=20)
        if not done:  # say what is stuck before giving up on it
            stuck = _task_stacks(exclude=asyncio.current_task())
            task.cancel()
            raise TimeoutError(f"{name} did not stop within 20 s; pending tasks:\n{stuck}")
        task.result()


def _task_stacks(*, exclude: asyncio.Task[Any] | None) -> str:
    """Every pending task with the chain of coroutines it is awaiting, innermost last."""
    lines = []
    for t in asyncio.all_tasks():
        if t is exclude:
            continue
        lines.append(f"{t.get_name()}:")
        coro: Any = t.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                lines.append(
                    f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
                )
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run an app's lifespan around in-process (ASGITransport) requests."""
    async with app.router.lifespan_context(app):
        yield app
