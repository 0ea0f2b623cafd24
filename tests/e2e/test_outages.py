"""The network fails, not the processes: PostgreSQL, then the broker, unreachable for a while —
cut by a small TCP proxy between the services and them. Writes answer 503 with Retry-After
while the database is away; consumers pause instead of dead-lettering; everything recovers by
itself, and every acknowledged ticket is counted once.

Each case prints accepted / stored / counted / lost / duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from bench.embedded import Load, Tally, post_tickets
from services.dispatch.models import Dispatch
from services.evaluation.models import TicketFact
from services.intake.models import TICKETS
from shared.broker import EmbeddedBroker, free_port
from shared.outbox import is_pending
from tests.support import PG_URL, Database, RunningService, open_database, wait_until

pytestmark = pytest.mark.slow

TICKETS_PER_PHASE = 60


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to a target; ``cut()`` refuses new connections and drops the
    open ones (as a failed link would), ``restore()`` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._pipe, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _pipe(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # Registered before the upstream connect: a cut while it is under way must drop it too.
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        if client_w not in self._writers:  # cut meanwhile
            client_w.transport.abort()
            server_w.transport.abort()
            return
        self._writers.add(server_w)

        async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

        # When either direction ends, for whatever reason, both ends are dropped: a link that
        # carried bytes one way only would leave a client waiting forever for its answer.
        directions = [
            asyncio.ensure_future(copy(client_r, server_w)),
            asyncio.ensure_future(copy(server_r, client_w)),
        ]
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in directions:
                task.cancel()
            for writer in (client_w, server_w):
                writer.transport.abort()
                self._writers.discard(writer)
            await asyncio.gather(*directions, return_exceptions=True)


@contextlib.asynccontextmanager
async def proxied(host: str, port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    await proxy.restore()
    try:
        yield proxy
    finally:
        if proxy._server is not None:
            await proxy.cut()


async def _tally(services: dict[str, RunningService], load: Load) -> Tally:
    """accepted / stored / counted / lost / duplicated, read from the services' databases."""
    ids = set(load.accepted.values())
    external = [f"{load.run}-%"]
    async with services["intake"].runtime.sessions() as session:
        stored, distinct = (
            await session.execute(
                select(func.count(), func.count(TICKETS.c.external_id.distinct())).where(
                    TICKETS.c.external_id.like(external[0])
                )
            )
        ).one()
    async with services["evaluation"].runtime.sessions() as session:
        counted = set(
            (
                await session.execute(
                    select(TicketFact.ticket_id).where(
                        TicketFact.ticket_id.in_(ids),  # type: ignore[attr-defined]
                        TicketFact.dispatched_at.is_not(None),  # type: ignore[union-attr]
                    )
                )
            ).scalars()
        )
    async with services["dispatch"].runtime.sessions() as session:
        per_ticket = (
            await session.execute(
                select(Dispatch.ticket_id, func.count())
                .where(Dispatch.ticket_id.in_(ids))  # type: ignore[attr-defined]
                .group_by(Dispatch.ticket_id)
            )
        ).all()
    return Tally(
        accepted=len(ids),
        stored=int(stored),
        counted=len(counted),
        lost=len(ids - counted),
        duplicated=int(stored) - int(distinct) + sum(c - 1 for _, c in per_ticket),
    )


def _dead_lettered(services: dict[str, RunningService]) -> float:
    return sum(
        sample.value
        for s in services.values()
        for metric in s.runtime.metrics.events_dead_lettered.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def _backlog(services: dict[str, RunningService]) -> dict[str, int]:
    """Unpublished outbox rows per service (what a stuck relay leaves)."""
    counts = {}
    for name, service in services.items():
        table = service.runtime.outbox_table
        async with service.runtime.reader.connect() as conn:
            counts[name] = (
                await conn.execute(select(func.count()).select_from(table).where(is_pending(table)))
            ).scalar_one()
    return counts


async def _sessions(services: dict[str, RunningService]) -> list[tuple[Any, ...]]:
    """The services' PostgreSQL sessions that wait or sit in a transaction."""
    engine = services["intake"].runtime.engine
    if engine.dialect.name != "postgresql":
        return []
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT application_name, state, wait_event_type, wait_event, left(query, 80) "
                "FROM pg_stat_activity WHERE application_name LIKE 'fengqiao-t%' "
                "AND (state <> 'idle' OR wait_event_type = 'Lock')"
            )
        )
        return [tuple(row) for row in rows]


async def _counted_all(services: dict[str, RunningService], load: Load) -> Tally:
    result: list[Tally] = []

    async def all_counted() -> bool:
        result[:] = [await _tally(services, load)]
        return result[0].lost == 0

    try:
        await wait_until(all_counted, timeout=60, interval=0.25, what="every ticket counted")
    except AssertionError as exc:
        consumers = {
            name: (s.runtime.consumer.paused, s.runtime.consumer.joined.is_set())
            for name, s in services.items()
            if s.runtime.consumer is not None
        }
        raise AssertionError(
            f"{exc}: {result[0]}; dead-lettered {_dead_lettered(services)}; "
            f"consumers (paused, joined) {consumers}; backlog {await _backlog(services)}; "
            f"sessions {await _sessions(services)}"
        ) from exc
    return result[0]


async def _phases(
    services: dict[str, RunningService], load: Load, cut: Any, restore: Any, *, outage: float
) -> None:
    """Post a third before the cut, a third during it (retrying), a third after."""
    url = services["intake"].url
    await post_tickets(url, load, range(TICKETS_PER_PHASE), concurrency=4)
    await cut()
    during = asyncio.create_task(
        post_tickets(url, load, range(TICKETS_PER_PHASE, 2 * TICKETS_PER_PHASE), concurrency=4)
    )
    await asyncio.sleep(outage)  # the outage itself: what is under test is its length
    await restore()
    await during
    await post_tickets(url, load, range(2 * TICKETS_PER_PHASE, 3 * TICKETS_PER_PHASE))


async def _through_an_outage(
    services: dict[str, RunningService],
    proxy: TcpProxy,
    what: str,
    capsys: pytest.CaptureFixture[str],
    outage: float = 4.0,
) -> Load:
    """Post tickets across an outage of ``what``; every one is counted once, none dead-lettered."""
    load = Load(run=f"cut-{uuid.uuid4().hex[:6]}")
    await _phases(services, load, proxy.cut, proxy.restore, outage=outage)
    result = await _counted_all(services, load)
    with capsys.disabled():
        print(f"\n{result.line(f'{what} cut for {outage:.0f} s')} refused {load.refusals}")
    assert result.accepted == result.stored == 3 * TICKETS_PER_PHASE
    assert result.lost == 0 and result.duplicated == 0
    assert _dead_lettered(services) == 0
    return load


async def test_a_database_outage_answers_503_pauses_consumers_and_heals(
    tmp_path: Path, prefix: str, suite: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    database = await open_database("postgres", lambda: tmp_path)
    host, port = database.root.split("@", 1)[1].split("/", 1)[0].split(":")
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        async with proxied(host, int(port)) as proxy:
            via_proxy = Database(
                "postgres", PG_URL.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
            )
            try:
                async with suite(
                    bootstrap=broker.bootstrap, database=via_proxy, prefix=prefix
                ) as services:
                    load = await _through_an_outage(services, proxy, "PostgreSQL", capsys)
                    assert load.refusals.get(503, 0) > 0, "no write met the outage"
                    assert set(load.refusals) == {503}, load.refusals
            finally:
                await via_proxy.drop()
    finally:
        broker.stop()


async def test_a_broker_outage_keeps_intake_accepting_and_heals(
    tmp_path: Path, prefix: str, suite: Any, sqlite_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    broker_port = free_port()
    async with proxied("127.0.0.1", broker_port) as proxy:
        # Clients learn the broker's address from its metadata: it must name the proxy.
        broker = EmbeddedBroker(
            port=broker_port, advertised_port=proxy.port, log_path=tmp_path / "broker.log"
        ).start()
        try:
            bootstrap = f"127.0.0.1:{proxy.port}"
            async with suite(bootstrap=bootstrap, database=sqlite_db, prefix=prefix) as services:
                load = await _through_an_outage(services, proxy, "the broker", capsys)
                assert load.refusals == {}, "intake refused tickets while only the broker was away"
                # The same broker came back: nothing had to be re-published.
                assert services["intake"].runtime.metrics.broker_epoch_changes._value.get() == 0
        finally:
            broker.stop()
