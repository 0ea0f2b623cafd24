"""Dispatch's event handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch import service
from services.dispatch.models import outbox_table
from shared.events.intake import TicketReceived
from shared.inbox import HandlerMap
from shared.outbox import Outbox

_OUTBOX = Outbox(outbox_table)


async def on_ticket_received(event: TicketReceived, *, session: AsyncSession) -> None:
    """Route every received ticket to a department."""
    await service.dispatch_ticket(session=session, outbox=_OUTBOX, ticket=event)


EVENT_HANDLERS: HandlerMap = {TicketReceived: on_ticket_received}
