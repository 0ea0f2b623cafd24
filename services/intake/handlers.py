"""Intake's event handlers: follow each ticket through dispatch and mediation, so the hotline and
Open311 can tell a citizen where their appeal stands."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import lifecycle, tracking
from services.intake.context import IntakeContext
from shared.events.base import Event
from shared.inbox import HandlerMap


def event_handlers(ctx: IntakeContext) -> HandlerMap:
    """The handlers of one intake app: every tracked dispatch and mediation event moves its
    ticket's state, history and status the same way."""

    async def on_ticket_event(event: Event, *, session: AsyncSession) -> None:
        """A dispatch or mediation event about a ticket: its state, history step and status."""
        await tracking.apply_lifecycle(session=session, event=event)

    return dict.fromkeys(lifecycle.TRACKED, on_ticket_event)
