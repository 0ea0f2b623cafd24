"""Helpers for dispatch's integration tests (the ``env`` fixture is in conftest.py).

``running`` starts one dispatch app per module and database with a ``ManualClock``: tickets go in as
real ``TicketReceived`` records on the intake topic, the API is called in-process, and time only
moves when a test moves it. Each test takes its own village (``env.place()``) so tests sharing
the app never see each other's dispatches.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from services.dispatch import placement
from services.dispatch.app import create_app
from services.dispatch.context import DispatchContext
from services.dispatch.models import TicketRecord, outbox_table
from services.dispatch.settings import DispatchSettings
from shared import geo
from shared.bus import make_producer
from shared.clock import ManualClock
from shared.events import INTAKE_TOPIC, MEDIATION_TOPIC, Event, decode
from shared.events.intake import Location, TicketReceived
from shared.outbox import is_pending, row_headers
from shared.workcalendar import SHANGHAI
from tests.support import (
    Database,
    isolated_settings,
    lifespan,
    publish_event,
    wait_until,
)

# Monday 23 November 2026, 09:30 in Shanghai: a plain working week ahead.
MONDAY = datetime(2026, 11, 23, 9, 30, tzinfo=SHANGHAI)
CENTRE = {"x-fengqiao-role": "centre", "x-fengqiao-subject": "centre-duty-officer"}


def dept(code: str) -> dict[str, str]:
    """Headers of a department acting for itself."""
    return {
        "x-fengqiao-role": "department",
        "x-fengqiao-department": code,
        "x-fengqiao-subject": f"clerk@{code}",
    }


def _villages() -> Iterator[str]:
    """The first grid of every village, Yuecheng district first (its streets are urban)."""
    seen: set[str] = set()
    for area in sorted(geo.city().by_code.values(), key=lambda a: a.code):
        if area.tier is geo.Tier.GRID and area.parent not in seen:
            seen.add(str(area.parent))
            yield area.code


_PLACES = _villages()


@dataclass
class DispatchEnv:
    """A running dispatch app and the means to feed and inspect it."""

    settings: DispatchSettings
    app: Any
    clock: ManualClock
    client: httpx.AsyncClient
    producer: AIOKafkaProducer
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # Tickets arrive on the intake topic (True) or straight through dispatch's own handler for
    # TicketReceived (False): modules about the workflow skip the consumer's fetch wait.
    bus: bool = True

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    @property
    def ctx(self) -> DispatchContext:
        return self.app.state.runtime.context  # type: ignore[no-any-return]

    def place(self) -> str:
        """A grid in a village no other test has used."""
        return next(_PLACES)

    async def publish(self, topic: str, event: Event) -> None:
        await publish_event(self.producer, self.settings, topic, event)

    async def ticket(
        self,
        *,
        category: str = "0204",
        grid: str | None = None,
        title: str = "小区垃圾无人清运",
        content: str = "楼下垃圾桶满了三天没人清运",
        channel: str = "hotline-12345-phone",
        **extra: Any,
    ) -> str:
        """Put a ticket on the intake topic and wait until dispatch has routed it."""
        ticket_id = f"T{next(self.counter):04d}-{uuid.uuid4().hex[:8]}"
        event = TicketReceived(
            ticket_id=ticket_id,
            channel=channel,
            received_at=self.clock.now(),
            title=title,
            content=content,
            category_code=category,
            location=Location(grid_code=grid),
            **extra,
        )
        if not self.bus:
            async with self.runtime.sessions() as session, session.begin():
                await placement.route_ticket(session=session, ctx=self.ctx, ticket=event)
            self.runtime.notify()
            return ticket_id
        await self.publish(INTAKE_TOPIC, event)

        async def routed() -> bool:
            async with self.runtime.sessions() as session:
                return await session.get(TicketRecord, ticket_id) is not None

        await wait_until(routed, timeout=20, what=f"dispatch to route {ticket_id}")
        return ticket_id

    async def mediation_event(self, event: Event) -> None:
        await self.publish(MEDIATION_TOPIC, event)

    async def handled(self, event: Event) -> None:
        """Wait until dispatch's consumer has applied ``event``: its inbox row says so, or for
        a received ticket (which gets none) the ticket's row."""
        if isinstance(event, TicketReceived):

            async def routed() -> bool:
                async with self.runtime.sessions() as session:
                    return await session.get(TicketRecord, event.ticket_id) is not None

            await wait_until(routed, timeout=20, what=f"dispatch to route {event.ticket_id}")
            return
        t = self.runtime.inbox_table

        async def applied() -> bool:
            async with self.runtime.engine.connect() as conn:
                status = await conn.execute(
                    select(t.c.status).where(t.c.event_id == str(event.event_id))
                )
                return status.scalar_one_or_none() == "applied"

        await wait_until(applied, timeout=20, what=f"dispatch to apply {event.event_type}")

    async def dispatches(self, ticket_id: str) -> list[dict[str, Any]]:
        """A ticket's dispatches, as the operator sees them."""
        response = await self.client.get(f"/tickets/{ticket_id}/dispatches")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def one(self, ticket_id: str) -> dict[str, Any]:
        (only,) = await self.dispatches(ticket_id)
        return only

    async def detail(self, dispatch_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/dispatches/{dispatch_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def act(
        self,
        dispatch_id: str,
        action: str,
        headers: dict[str, str],
        body: Any = None,
        *,
        expect: int = 200,
    ) -> dict[str, Any]:
        """POST an action and check its status code."""
        response = await self.client.post(
            f"/dispatches/{dispatch_id}/{action}", json=body, headers=headers
        )
        assert response.status_code == expect, response.text
        return response.json()  # type: ignore[no-any-return]

    async def events(self, ticket_id: str) -> list[Event]:
        """The events dispatch wrote for a ticket, in order (from its outbox)."""
        t = outbox_table
        async with self.runtime.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(t.c.payload, t.c.headers, t.c.header_block, t.c.key)
                    .where(t.c.key == ticket_id)
                    .order_by(t.c.id)
                )
            ).all()
        return [
            decode(
                row.payload,
                row_headers(row.headers, row.header_block),
                row.key.encode(),
            )
            for row in rows
        ]

    async def all_published(self) -> bool:
        """True when the outbox holds no unpublished row."""
        t = outbox_table
        async with self.runtime.engine.connect() as conn:
            pending = await conn.execute(select(func.count()).select_from(t).where(is_pending(t)))
            return pending.scalar_one() == 0

    async def joined(self) -> bool:
        """True once the consumer has its partitions."""
        return bool(self.runtime.consumer.joined.is_set())

    async def event_types(self, ticket_id: str) -> list[str]:
        return [e.event_type for e in await self.events(ticket_id)]


@contextlib.asynccontextmanager
async def running(
    database: Database, bootstrap: str, *, clock: ManualClock | None = None, **extra: Any
) -> AsyncIterator[DispatchEnv]:
    """Migrate, start dispatch with a manual clock, and a producer to feed it."""
    settings = await isolated_settings(
        DispatchSettings,
        service="dispatch",
        database=database,
        bootstrap=bootstrap,
        **{"scheduler_interval_ms": 50, **extra},
    )
    async with start(settings, clock or ManualClock(MONDAY)) as env:
        yield env


@contextlib.asynccontextmanager
async def start(settings: DispatchSettings, clock: ManualClock) -> AsyncIterator[DispatchEnv]:
    """Start (or restart) dispatch on already-migrated settings."""
    app = create_app(settings, clock=clock)
    producer = make_producer(settings, client_id="test-feeder")
    await producer.start()
    try:
        async with lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://dispatch") as client:
                env = DispatchEnv(settings, app, clock, client, producer)
                yield env
                # Everything dispatch wrote reached the broker. (Waiting for it also keeps the
                # shutdown clear of a relay wake-up: on Python 3.11 ``asyncio.wait_for`` in
                # OutboxRelay._relay_loop swallows a cancel that lands as the wake event fires,
                # and the relay then never stops — reported to the lead.)
                await wait_until(env.all_published, timeout=15, what="the outbox to drain")
                # A consumer stopped half-way through joining its group waits out the join.
                await wait_until(env.joined, timeout=15, what="the consumer to join")
    finally:
        await producer.stop()
