"""Mediation's event handlers: dispatch's tickets on the mediation line become cases, and hard
tickets (escalated to the city tier, re-routed again and again) go on the backlog board.

Every service's ``handlers.py`` has this shape: one ``event_handlers(ctx)`` that binds each
handler to the app's context and returns the explicit event-type → handler map. A handler
writes through the consumer's session and never commits (the inbox commits once per event).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation import board, service
from services.mediation.context import MediationContext
from services.mediation.models import TicketWatch
from shared.events.dispatch import DispatchEscalated, MediationRequested, TicketAssigned
from shared.inbox import HandlerMap, Only


def reaches_city(event: DispatchEscalated) -> bool:
    """True when an escalation went to the city tier (a city unit, or past the last centre)."""
    target = event.target_department_code
    return target is None or target.upper().startswith("CITY")


def concerns_mediation(event: TicketAssigned) -> bool:
    """True for an assignment mediation acts on: down the mediation line, or a re-routing
    (counted towards the backlog board). Every other assignment is passed over unread."""
    return event.handling_line == "mediation" or event.mode == "reroute"


def may_concern_mediation(payload: bytes) -> bool:
    """False only for an assignment's payload ``concerns_mediation`` is sure to refuse, read
    from its bytes before they are decoded: one it accepts names the mediation line or a
    re-routing, and JSON can write those words otherwise only with an escape (a backslash).
    Most of what mediation did a ticket was decoding an assignment to pass it over."""
    return b"mediation" in payload or b"reroute" in payload or b"\\" in payload


def event_handlers(ctx: MediationContext) -> HandlerMap:
    """The handlers of one mediation app, bound to its context."""

    async def on_ticket_assigned(event: TicketAssigned, *, session: AsyncSession) -> None:
        """Tickets sent down the mediation line become cases; re-routings are counted."""
        await service.open_case_for_dispatch(session=session, ctx=ctx, event=event)
        if event.mode != "reroute":
            return
        watch = await session.get(TicketWatch, event.ticket_id, with_for_update=True)
        if watch is None:
            watch = TicketWatch(ticket_id=event.ticket_id, reroutes=0, area_code=event.area_code)
            session.add(watch)
        watch.reroutes += 1
        if watch.reroutes >= ctx.settings.board_reroutes:
            await board.post_ticket(
                session=session,
                ctx=ctx,
                ticket_id=event.ticket_id,
                reason=f"re-routed {watch.reroutes} times",
                area_code=event.area_code,
            )

    async def on_mediation_requested(event: MediationRequested, *, session: AsyncSession) -> None:
        """Dispatch asked for mediation (the mediation line, or a department mid-handling)."""
        await service.open_case_for_request(session=session, ctx=ctx, event=event)

    async def on_dispatch_escalated(event: DispatchEscalated, *, session: AsyncSession) -> None:
        """A ticket escalated to the city tier is a hard case: post it on the board."""
        if reaches_city(event):
            await board.post_ticket(
                session=session,
                ctx=ctx,
                ticket_id=event.ticket_id,
                reason=f"dispatch escalated to the city tier ({event.clock} missed)",
                area_code=None,
            )

    return {
        TicketAssigned: Only(
            on_ticket_assigned, when=concerns_mediation, screen=may_concern_mediation
        ),
        MediationRequested: on_mediation_requested,
        DispatchEscalated: Only(on_dispatch_escalated, when=reaches_city),
    }
