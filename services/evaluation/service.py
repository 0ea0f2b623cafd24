"""Evaluation's projections and queries."""

from __future__ import annotations

from sqlalchemy import and_, case, func, select
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
    """Count a dispatched ticket: the earliest assignment gives the dispatch time, the latest
    (by when it happened, not when it arrived) the department and line."""
    fact = await _fact(session, event.ticket_id)
    if fact.dispatched_at is None or event.occurred_at < fact.dispatched_at:
        fact.dispatched_at = event.occurred_at
    if fact.assigned_at is None or event.occurred_at >= fact.assigned_at:
        fact.assigned_at = event.occurred_at
        fact.department_code = event.department_code
        fact.handling_line = event.handling_line


async def record_feedback(*, session: AsyncSession, event: FeedbackReceived) -> None:
    """The callback with the highest revision counts, whatever order callbacks arrive in; an
    older or repeated revision (a redelivery, a replay) changes nothing."""
    fact = await _fact(session, event.ticket_id)
    if fact.feedback_revision is not None and event.revision <= fact.feedback_revision:
        return
    fact.feedback_id = event.feedback_id
    fact.feedback_revision = event.revision
    fact.resolved = event.resolved
    fact.satisfaction = event.satisfaction


async def summary(*, session: AsyncSession) -> Summary:
    """Counts of received, dispatched, awaiting and called-back tickets.

    Each is a count of tickets in one state, never a difference of two counts: events travel
    on different topics, so a ticket's assignment may be counted before its receipt."""
    received_at, dispatched_at = col(TicketFact.received_at), col(TicketFact.dispatched_at)
    awaiting = and_(received_at.is_not(None), dispatched_at.is_(None))
    row = (
        await session.execute(
            select(
                func.count(received_at),
                func.count(dispatched_at),
                func.count(case((awaiting, 1))),
                func.count(col(TicketFact.satisfaction)),
            )
        )
    ).one()
    received, dispatched, awaiting_dispatch, feedback = (int(v) for v in row)
    return Summary(
        received=received,
        dispatched=dispatched,
        awaiting_dispatch=awaiting_dispatch,
        feedback=feedback,
    )
