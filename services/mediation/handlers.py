"""Mediation's event handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation import service
from services.mediation.models import outbox_table
from shared.events.dispatch import MediationRequested, TicketAssigned
from shared.inbox import HandlerMap
from shared.outbox import Outbox

_OUTBOX = Outbox(outbox_table)


async def on_ticket_assigned(event: TicketAssigned, *, session: AsyncSession) -> None:
    """Tickets sent down the mediation line become cases."""
    await service.open_case_for_dispatch(session=session, outbox=_OUTBOX, event=event)


async def on_mediation_requested(event: MediationRequested, *, session: AsyncSession) -> None:
    """Dispatch asked for mediation (the mediation line, or a department mid-handling)."""
    await service.open_case_for_request(session=session, outbox=_OUTBOX, event=event)


EVENT_HANDLERS: HandlerMap = {
    TicketAssigned: on_ticket_assigned,
    MediationRequested: on_mediation_requested,
}
