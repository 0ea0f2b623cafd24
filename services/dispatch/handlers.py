"""Dispatch's event handlers: intake's tickets are routed; mediation's outcomes close the loop;
evaluation's proposals become proactive dispatches.

Handlers need the app's context (clock, org chart, rules), so the map is built per app by
``event_handlers(ctx)``; each handler writes through the consumer's session and never commits.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch import closing, placement, proactive
from services.dispatch.context import DispatchContext
from shared.events.evaluation import ProactiveWorkProposed
from shared.events.intake import TicketReceived
from shared.events.mediation import AgreementReached, CaseOpened, MediationFailed
from shared.inbox import Batch, HandlerMap


def event_handlers(ctx: DispatchContext) -> HandlerMap:
    """The handlers of one dispatch app, bound to its context."""

    async def on_tickets_received(
        events: Sequence[TicketReceived], *, session: AsyncSession
    ) -> list[str]:
        """Route every received ticket with the active rules, a fetched batch at a time, and
        answer which events were applied. A ticket already routed is refused whatever its
        event id (routing looks the batch's tickets up anyway), so the consumer's inbox
        look-up of these events would only repeat that: they go without it (``deduplicates``),
        and a refused one counts as a duplicate. For the same reason they get no inbox row
        (``inbox_rows=False``): the ticket's row, keyed by its id and written with its dispatch
        (one statement, or copies in one transaction), is the record that it was routed, and a
        ticket routed twice at once is refused by that key (the second write fails whole and
        its fetch is redone one by one, where routing refuses it). The inbox rows were ~13 % of
        dispatch's PostgreSQL CPU a ticket, and read by nothing."""
        applied: list[str] = []
        await placement.route_tickets(session=session, ctx=ctx, tickets=events, applied=applied)
        return applied

    async def on_case_opened(event: CaseOpened, *, session: AsyncSession) -> None:
        """Remember which mediation case handles a ticket."""
        await closing.record_case(session=session, ticket_id=event.ticket_id, case_id=event.case_id)

    async def on_agreement_reached(event: AgreementReached, *, session: AsyncSession) -> None:
        """A mediated agreement completes the ticket's open dispatches."""
        if event.ticket_id is None:
            return  # a walk-in case: no dispatch to complete
        await closing.complete_by_agreement(
            session=session,
            ctx=ctx,
            ticket_id=event.ticket_id,
            case_id=event.case_id,
            summary=event.summary,
        )

    async def on_mediation_failed(event: MediationFailed, *, session: AsyncSession) -> None:
        """A failed mediation closes the mediation dispatch and sends the ticket on."""
        if event.ticket_id is None:
            return  # a walk-in case: no dispatch to close
        await closing.fail_mediation(
            session=session,
            ctx=ctx,
            ticket_id=event.ticket_id,
            case_id=event.case_id,
            reason=event.reason,
            referral=event.referral,
        )

    async def on_proactive_work_proposed(
        event: ProactiveWorkProposed, *, session: AsyncSession
    ) -> None:
        """A proposal from the hot-spot analysis becomes a proactive dispatch."""
        await proactive.place_proposal(session=session, ctx=ctx, proposal=event)

    EVENT_HANDLERS: HandlerMap = {
        TicketReceived: Batch(on_tickets_received, deduplicates=True, inbox_rows=False),
        CaseOpened: on_case_opened,
        AgreementReached: on_agreement_reached,
        MediationFailed: on_mediation_failed,
        ProactiveWorkProposed: on_proactive_work_proposed,
    }
    return EVENT_HANDLERS
