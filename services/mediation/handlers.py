"""Mediation's event handlers: dispatch's tickets on the mediation line become cases.

Every service's ``handlers.py`` has this shape: one ``event_handlers(ctx)`` that binds each
handler to the app's context and returns the explicit event-type → handler map. A handler
writes through the consumer's session and never commits (the inbox commits once per event).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation import service
from services.mediation.context import MediationContext
from shared.events.dispatch import MediationRequested, TicketAssigned
from shared.inbox import HandlerMap


def event_handlers(ctx: MediationContext) -> HandlerMap:
    """The handlers of one mediation app, bound to its context."""

    async def on_ticket_assigned(event: TicketAssigned, *, session: AsyncSession) -> None:
        """Tickets sent down the mediation line become cases."""
        await service.open_case_for_dispatch(session=session, ctx=ctx, event=event)

    async def on_mediation_requested(event: MediationRequested, *, session: AsyncSession) -> None:
        """Dispatch asked for mediation (the mediation line, or a department mid-handling)."""
        await service.open_case_for_request(session=session, ctx=ctx, event=event)

    return {
        TicketAssigned: on_ticket_assigned,
        MediationRequested: on_mediation_requested,
    }
