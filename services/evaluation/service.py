"""Evaluation's projections and queries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.evaluation.models import Summary, TicketFact
from shared.events.dispatch import TicketAssigned
from shared.events.intake import FeedbackReceived, TicketReceived


async def _fact(session: AsyncSession, ticket_id: str) -> TicketFact:
    fact = await session.get(TicketFact, ticket_id)
    if fact is None:
        fact = TicketFact(ticket_id=ticket_id)
        session.add(fact)
    return fact


async def record_received(*, session: AsyncSession, event: TicketReceived) -> None:
    """Count a received ticket."""
    fact = await _fact(session, event.ticket_id)
    fact.channel = event.channel
    fact.category_code = event.category_code
    fact.received_at = event.received_at


async def record_assigned(*, session: AsyncSession, event: TicketAssigned) -> None:
    """Count a dispatched ticket (first assignment wins the timestamp)."""
    fact = await _fact(session, event.ticket_id)
    if fact.dispatched_at is None:
        fact.dispatched_at = event.occurred_at
    fact.department_code = event.department_code
    fact.handling_line = event.handling_line


async def record_feedback(*, session: AsyncSession, event: FeedbackReceived) -> None:
    """The latest callback for a ticket is the one that counts."""
    fact = await _fact(session, event.ticket_id)
    fact.resolved = event.resolved
    fact.satisfaction = event.satisfaction


async def summary(*, session: AsyncSession) -> Summary:
    """Counts of received, dispatched and called-back tickets."""
    row = (
        await session.execute(
            select(
                func.count(col(TicketFact.received_at)),
                func.count(col(TicketFact.dispatched_at)),
                func.count(col(TicketFact.satisfaction)),
            )
        )
    ).one()
    received, dispatched, feedback = (int(v) for v in row)
    return Summary(
        received=received,
        dispatched=dispatched,
        awaiting_dispatch=max(received - dispatched, 0),
        feedback=feedback,
    )
