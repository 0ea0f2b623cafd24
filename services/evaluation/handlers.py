"""Evaluation's event handlers: fold every service's events into the projections."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.evaluation import service
from services.evaluation.context import EvaluationContext
from shared.events.dispatch import TicketAssigned
from shared.events.intake import FeedbackReceived, TicketReceived
from shared.inbox import HandlerMap


def event_handlers(ctx: EvaluationContext) -> HandlerMap:
    """The handlers of one evaluation app, bound to its context."""

    async def on_ticket_received(event: TicketReceived, *, session: AsyncSession) -> None:
        await service.record_received(session=session, event=event)

    async def on_ticket_assigned(event: TicketAssigned, *, session: AsyncSession) -> None:
        await service.record_assigned(session=session, event=event)

    async def on_feedback(event: FeedbackReceived, *, session: AsyncSession) -> None:
        await service.record_feedback(session=session, event=event)

    return {
        TicketReceived: on_ticket_received,
        TicketAssigned: on_ticket_assigned,
        FeedbackReceived: on_feedback,
    }
