"""Helpers for evaluation's integration tests (the ``env`` fixture is in conftest.py).

``running`` starts one evaluation app per module and database. Events go in either straight
through evaluation's handlers (``env.fold``: one transaction each, in exactly the order a test
gives) or as records on the real broker (``env.publish``). Tests share the app, so each uses its
own ticket ids (``env.ticket_id()``) and compares ``/summary`` before and after.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from services.evaluation.app import create_app
from services.evaluation.handlers import event_handlers
from services.evaluation.models import TicketFact, ledger_table
from services.evaluation.settings import EvaluationSettings
from shared.bus import make_producer
from shared.events import Event
from shared.events.dispatch import TicketAssigned
from shared.events.intake import FeedbackReceived, TicketReceived
from tests.support import (
    Database,
    as_role,
    isolated_settings,
    lifespan,
    publish_event,
    wait_until,
)

COMMITTEE = as_role("committee", subject="supervision-office")
T0 = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)


def received(ticket_id: str) -> TicketReceived:
    return TicketReceived(
        ticket_id=ticket_id,
        channel="hotline-12345-phone",
        received_at=T0,
        title="停水",
        content="整栋楼停水一天",
        category_code="0204",
    )


def assigned(ticket_id: str, department: str, *, minutes: int = 0) -> TicketAssigned:
    return TicketAssigned(
        ticket_id=ticket_id,
        dispatch_id=f"D-{ticket_id}-{uuid.uuid4().hex[:8]}",
        department_code=department,
        department_tier="district",
        category_code="0204",
        channel="hotline-12345-phone",
        occurred_at=T0 + timedelta(minutes=minutes),
    )


def feedback(
    ticket_id: str, revision: int, *, resolved: bool, satisfaction: Any
) -> FeedbackReceived:
    return FeedbackReceived(
        ticket_id=ticket_id,
        feedback_id=f"{ticket_id}-R{revision}",
        revision=revision,
        replaces=f"{ticket_id}-R{revision - 1}" if revision > 1 else None,
        resolved=resolved,
        satisfaction=satisfaction,
    )


@dataclass
class EvaluationEnv:
    """A running evaluation app and the means to feed and inspect it."""

    settings: EvaluationSettings
    app: Any
    client: httpx.AsyncClient
    producer: AIOKafkaProducer
    database: Database

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    @staticmethod
    def ticket_id() -> str:
        return f"TE{uuid.uuid4().hex[:12]}"

    async def fold(self, *events: Event) -> None:
        """Apply events through evaluation's handlers, one transaction each, in this order."""
        handlers = event_handlers(self.runtime.context)
        for event in events:
            async with self.runtime.sessions() as session, session.begin():
                await handlers[type(event)](event, session=session)

    async def publish(self, topic: str, event: Event) -> None:
        await publish_event(self.producer, self.settings, topic, event)

    async def consumed(self, event: Event) -> bool:
        """True once the consumer has processed the event: applied (its ledger row is
        written; applied events get no inbox row) or dead-lettered (its inbox row says so)."""
        inbox, event_id = self.runtime.inbox_table, str(event.event_id)
        async with self.runtime.engine.connect() as conn:
            for query in (
                select(ledger_table.c.event_id).where(ledger_table.c.event_id == event_id),
                select(inbox.c.status).where(inbox.c.event_id == event_id),
            ):
                if (await conn.execute(query)).first() is not None:
                    return True
            return False

    async def fact(self, ticket_id: str) -> TicketFact | None:
        async with self.runtime.sessions() as session:
            return await session.get(TicketFact, ticket_id)

    async def summary(self) -> dict[str, int]:
        response = await self.client.get("/summary", headers=COMMITTEE)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def joined(self) -> bool:
        return bool(self.runtime.consumer.joined.is_set())


@contextlib.asynccontextmanager
async def running(database: Database, bootstrap: str, **extra: Any) -> AsyncIterator[EvaluationEnv]:
    """Migrate and start evaluation, with a producer to feed it."""
    settings = await isolated_settings(
        EvaluationSettings, service="evaluation", database=database, bootstrap=bootstrap, **extra
    )
    app = create_app(settings)
    producer = make_producer(settings, client_id="test-feeder")
    await producer.start()
    try:
        async with lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://evaluation") as c:
                env = EvaluationEnv(settings, app, c, producer, database)
                yield env
                # A consumer stopped half-way through joining its group waits out the join.
                await wait_until(env.joined, timeout=15, what="the consumer to join")
    finally:
        await producer.stop()
