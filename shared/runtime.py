"""The one wiring point of a service process: database, bus, background loops, and the
FastAPI app around them (health, readiness, metrics, errors)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import asyncpg
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import AwareDatetime
from sqlalchemy import MetaData, Table, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared import db, logs
from shared.auth import Role, require_roles
from shared.bus import BrokerWatch
from shared.clock import Clock, SystemClock
from shared.errors import DEFAULT_STATUS, DomainError, status_for
from shared.groupcommit import GroupCommitter
from shared.inbox import HandlerMap, InboxConsumer, database_unreachable
from shared.lease import HostLease
from shared.limits import BodySizeLimitMiddleware
from shared.metrics import CONTENT_TYPE_LATEST, HttpMetricsMiddleware, ServiceMetrics
from shared.outbox import AUDIT_TABLE, Outbox, OutboxRelay, read_audit_trail
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class ServiceContext:
    """What a service's handlers and routes work with besides a session: settings, the clock,
    the outbox and the database, plus whatever the service caches (subclass it in the service's
    ``context.py``). Built once per app in ``create_app``; bound to the runtime at start."""

    def __init__(
        self, settings: ServiceSettings, *, outbox: Outbox, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        # The one outbox object of the service: on its own ``outbox`` table, usable before the
        # runtime exists (command-line tools write events through it too).
        self.outbox = outbox
        self.clock: Clock = clock or SystemClock()
        self._runtime: Runtime | None = None

    def bind(self, runtime: Runtime) -> None:
        """Called once the runtime exists; subclasses register their metrics here."""
        self._runtime = runtime

    async def start(self) -> None:
        """Called after ``bind`` and before the bus starts: load reference data, warm caches."""

    async def stop(self) -> None:
        """Called at the service's stop, after its loops and before its engines are disposed:
        return connections the context keeps checked out."""

    def now(self) -> datetime:
        """The current time, per the injected clock."""
        return self.clock.now()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a running service yet")
        return self._runtime

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions on the writers' engine."""
        return self.runtime.sessions

    @property
    def engine(self) -> AsyncEngine:
        """The writers' engine."""
        return self.runtime.engine

    @property
    def reader(self) -> AsyncEngine:
        """The readers' engine (a deferred-BEGIN one on SQLite, the same engine on PostgreSQL)."""
        return self.runtime.reader

    @property
    def registry(self) -> CollectorRegistry:
        """The service's Prometheus registry."""
        return self.runtime.metrics.registry


C = TypeVar("C", bound=ServiceContext)


@dataclass
class ServiceSpec(Generic[C]):
    """What makes one service different from another, declared in its ``app.py``."""

    name: str
    title: str
    metadata: MetaData
    context: C
    consumes: tuple[str, ...] = ()
    # ``handlers.event_handlers``: the event-type → handler map, built on the bound context.
    handlers: Callable[[C], HandlerMap] | None = None
    # Domain error kind → HTTP status, on top of ``shared.errors.DEFAULT_STATUS``.
    errors: Mapping[type[Exception], int] = field(default_factory=dict)
    group_commit: bool = False
    routers: Sequence[Any] = ()
    description: str = ""
    # Loops run for the life of the service (schedulers): started after the bus, cancelled on stop.
    background: Sequence[Callable[[C], Coroutine[Any, Any, None]]] = ()
    # The app's class: a FastAPI subclass that answers some requests before its middlewares.
    app_class: type[FastAPI] = FastAPI


class Runtime:
    """Everything a running service holds; lives on ``app.state.runtime``."""

    def __init__(self, spec: ServiceSpec[Any], settings: ServiceSettings) -> None:
        self.spec = spec
        self.context: ServiceContext = spec.context
        self.settings = settings
        self.metrics = ServiceMetrics(spec.name)
        self.watch = BrokerWatch()
        self.engine: AsyncEngine = db.create_engine(settings)
        # SQLite readers get their own deferred-BEGIN engine; PostgreSQL needs no split.
        self.reader: AsyncEngine = (
            db.create_engine(settings, readonly=True) if settings.is_sqlite else self.engine
        )
        self.sessions: async_sessionmaker[AsyncSession] = db.session_factory(self.engine)
        tables = spec.metadata.tables
        self.outbox_table: Table = tables["outbox"]
        self.inbox_table: Table = tables["inbox"]
        self.bus_state_table: Table = tables["bus_state"]
        self.outbox: Outbox = spec.context.outbox
        self.committer: GroupCommitter | None = None
        self.relay: OutboxRelay | None = None
        self.consumer: InboxConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def notify(self) -> None:
        """Wake the relay: rows were just committed to the outbox."""
        if self.relay is not None:
            self.relay.wake()

    async def start(self) -> None:
        """Start the producer, relay, consumer and group committer (the broker may still be down:
        the loops keep retrying and /readyz says so)."""
        s = self.settings
        self.relay = OutboxRelay(
            engine=self.engine,
            outbox=self.outbox_table,
            bus_state=self.bus_state_table,
            settings=s,
            metrics=self.metrics,
            watch=self.watch,
            client_id=f"{self.spec.name}-relay",
            reader=self.reader,
            lease=relay_lease(self.spec.name, s),
        )
        self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        if self.spec.consumes:
            self.consumer = InboxConsumer(
                name=self.spec.name,
                topics=self.spec.consumes,
                handlers=self.spec.handlers(self.context) if self.spec.handlers else {},
                engine=self.engine,
                sessions=self.sessions,
                inbox=self.inbox_table,
                outbox=self.outbox_table,
                settings=s,
                metrics=self.metrics,
                watch=self.watch,
                on_commit=self.notify,
            )
            self._tasks.append(asyncio.create_task(self.consumer.run(), name="inbox-consumer"))
        if self.spec.group_commit:
            self.committer = GroupCommitter(
                self.engine,
                max_batch=s.group_commit_max_batch,
                on_commit=self._group_committed,
                lanes=1 if s.is_sqlite else s.group_commit_lanes,
            )
            await self.committer.start()
        for loop in self.spec.background:
            name = getattr(loop, "__name__", "background")
            self._tasks.append(asyncio.create_task(loop(self.context), name=name))

    def _group_committed(self, units: int) -> None:
        self.metrics.group_commit_size.observe(units)
        self.notify()

    async def stop(self) -> None:
        if self.committer is not None:
            await self.committer.stop()
        await stop_tasks(self._tasks, name=self.spec.name)
        self._tasks.clear()
        await self.context.stop()
        await self.engine.dispose()
        if self.reader is not self.engine:
            await self.reader.dispose()

    async def readiness(self) -> dict[str, str]:
        """What is reachable, by dependency."""
        status: dict[str, str] = {}
        # Writes committed while the ping waits prove the database answers: a service busy
        # catching up (its pool checked out, its loop behind) is ready, not unreachable.
        committed = self.committer.batches if self.committer is not None else None
        try:
            async with asyncio.timeout(2.0):
                # The readers' engine: on SQLite a deferred BEGIN, so the ping never queues for
                # the write lock behind another process's (or this one's) long write.
                await db.ping(self.reader)
            status["database"] = "ok"
        except Exception as exc:
            busy = self.committer is not None and self.committer.batches != committed
            status["database"] = "ok" if busy else f"unreachable: {type(exc).__name__}"
        status["broker"] = "ok" if self.watch.reachable else "unreachable"
        if self.consumer is not None:
            status["consumer"] = "joined" if self.consumer.joined.is_set() else "joining"
        return status


def relay_lease(service: str, settings: ServiceSettings) -> HostLease | None:
    """The host lease the relay of ``service`` publishes under: one per database. A SQLite
    file's lease lies beside it (and goes with its directory); in memory there is none, no other
    process has that database."""
    if not settings.outbox_relay_one_per_host:
        return None
    if settings.is_sqlite:
        path = settings.sqlite_path()
        return (
            None
            if path is None
            else HostLease(path.resolve().with_name(f"{path.name}.{service}-relay.lock"))
        )
    return HostLease.named(service, settings.database_url, settings.database_schema or "")


async def stop_tasks(
    tasks: Sequence[asyncio.Task[Any]], *, name: str, patience: float = 5.0, tries: int = 3
) -> None:
    """Cancel background tasks and wait for them, cancelling again any that carry on.

    A cancellation can be lost inside a library (``asyncio.wait_for`` on 3.11 drops one that
    arrives as its call completes), and the task would then run on and hold the shutdown
    forever. After ``tries`` rounds of ``patience`` seconds the stragglers are left, logged.
    """
    pending = {t for t in tasks if not t.done()}
    for _ in range(tries):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("%s: task %s ended with %r", name, task.get_name(), task.exception())
    for task in pending:
        log.warning("%s: task %s did not stop; left behind", name, task.get_name())


def create_service_app(spec: ServiceSpec[Any]) -> FastAPI:
    """A FastAPI app with the service's routers, lifespan, health, readiness, metrics and
    its domain errors answered through one status table."""
    settings = spec.context.settings
    logs.configure(service=spec.name, level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(spec, settings)
        app.state.runtime = runtime
        app.state.metrics = runtime.metrics
        spec.context.bind(runtime)
        await spec.context.start()
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = spec.app_class(
        title=spec.title, description=spec.description, version="0.1.0", lifespan=lifespan
    )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": spec.name}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the database and the broker are reachable (503 otherwise)."""
        checks = await request.app.state.runtime.readiness()
        ready = checks["database"] == "ok" and checks["broker"] == "ok"
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics in text exposition format."""
        return Response(request.app.state.runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    operator_only = Depends(require_roles(Role.OPERATOR))

    @app.post("/admin/outbox/replay", tags=["operations"], dependencies=[operator_only])
    async def replay(request: Request, since: AwareDatetime) -> dict[str, int]:
        """Publish again every retained event created since ``since`` (consumers de-duplicate)."""
        runtime: Runtime = request.app.state.runtime
        assert runtime.relay is not None
        return {"requeued": await runtime.relay.requeue_since(since)}

    @app.get("/admin/dead-letters", tags=["operations"], dependencies=[operator_only])
    async def dead_letters(request: Request, limit: int = 100) -> list[dict[str, Any]]:
        """Events this service dead-lettered, newest first, with the reason."""
        runtime: Runtime = request.app.state.runtime
        inbox = runtime.inbox_table
        async with runtime.reader.connect() as conn:
            rows = await conn.execute(
                select(
                    inbox.c.event_id,
                    inbox.c.event_type,
                    inbox.c.topic,
                    inbox.c.partition,
                    inbox.c.offset,
                    inbox.c.error,
                    inbox.c.processed_at,
                )
                .where(inbox.c.status == "dead_lettered")
                .order_by(inbox.c.processed_at.desc())
                .limit(min(max(limit, 1), 1000))
            )
            return [dict(row._mapping) for row in rows]

    @app.get("/admin/audit", tags=["operations"], dependencies=[operator_only])
    async def audit(
        request: Request, ticket_id: Annotated[str, Query(min_length=1, max_length=64)]
    ) -> list[dict[str, Any]]:
        """Who caused each event this service wrote about one ticket, oldest first."""
        runtime: Runtime = request.app.state.runtime
        table = runtime.spec.metadata.tables[AUDIT_TABLE]
        async with runtime.reader.connect() as conn:
            rows = await read_audit_trail(conn, table, ticket_id=ticket_id)
            await conn.rollback()
        return [{"service": spec.name, **row} for row in rows]

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 whose detail names every failing field by its dotted path."""
        errors = [
            {
                "field": ".".join(str(p) for p in err["loc"] if p != "body") or "body",
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": summary, "errors": errors}, status_code=422)

    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        """503 + Retry-After when the database is busy (SQLite's write lock held past the busy
        timeout) or unreachable. A retry is safe where requests carry an external id: a request
        that did get stored is answered with its first result."""
        if not database_unreachable(exc):
            raise exc  # a real fault: the server-error middleware answers 500 and logs it
        orig = getattr(exc, "orig", None) or exc
        reason = (str(orig).splitlines() or [type(orig).__name__])[0]
        log.warning("%s: database unavailable: %s", spec.name, reason)
        return JSONResponse(
            {"detail": f"the database is busy or unavailable ({reason}); retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    # Raw driver errors too: the group committer writes through asyncpg directly.
    for kind in (DBAPIError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        app.add_exception_handler(kind, database_unavailable)

    status_table = {**DEFAULT_STATUS, **spec.errors}

    async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
        """Every domain error: the status from the app's table, the body from the error."""
        if isinstance(exc, DomainError):
            return JSONResponse(
                exc.body(), status_code=status_for(exc, status_table), headers=exc.headers()
            )
        return JSONResponse({"detail": str(exc)}, status_code=status_for(exc, status_table))

    for kind in status_table:
        app.add_exception_handler(kind, domain_error)

    for router in spec.routers:
        app.include_router(router)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Finds the runtime's metrics on the app state once the lifespan has run.
    app.add_middleware(HttpMetricsMiddleware)
    return app


def context_of(cls: type[C]) -> Callable[[Request], Awaitable[C]]:
    """A FastAPI dependency giving the running service's context, typed as ``cls``:
    ``IntakeDep = Annotated[IntakeContext, Depends(context_of(IntakeContext))]``."""

    async def get_context(request: Request) -> C:
        context = request.app.state.runtime.context
        if not isinstance(context, cls):
            raise TypeError(f"this app's context is {type(context).__name__}, not {cls.__name__}")
        return context

    return get_context


async def get_runtime(request: Request) -> Runtime:
    """The running service's runtime (a FastAPI dependency; async, so no threadpool hop)."""
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
