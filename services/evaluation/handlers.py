"""Evaluation's event handlers: every intake, dispatch and mediation event about a ticket or a
mediation case goes into the ledger and refolds its fact — a fetched batch at a time, each fact
refolded once however many of its events the batch holds."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.evaluation import service
from services.evaluation.context import EvaluationContext
from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event
from shared.inbox import Batch, HandlerMap

# Everything about a ticket or a case; the organisation's own events (departments, rules) and
# the backlog board are not figures of any ticket.
FOLDED: tuple[type[Event], ...] = (
    i.TicketReceived,
    i.FeedbackReceived,
    d.TicketAssigned,
    d.GrabOffered,
    d.DispatchSigned,
    d.ReturnRequested,
    d.ReturnDecided,
    d.DispatchTransferred,
    d.ExtensionRequested,
    d.ExtensionDecided,
    d.ProgressNoted,
    d.CitizenContacted,
    d.DispatchCompleted,
    d.DispatchWithdrawn,
    d.DispatchSupervised,
    d.DispatchFocused,
    d.DispatchEscalated,
    d.WhistleBlown,
    d.DepartmentReported,
    d.MediationRequested,
    m.CaseOpened,
    m.CaseAssigned,
    m.SessionHeld,
    m.AgreementReached,
    m.MediationFailed,
    m.CourtConfirmation,
    m.AgreementFulfilled,
    m.AgreementBreached,
    m.CaseEscalated,
    m.CaseReferred,
    m.CaseClosed,
)


def event_handlers(ctx: EvaluationContext) -> HandlerMap:
    """The handlers of one evaluation app, bound to its context."""

    async def on_events(events: Sequence[Event], *, session: AsyncSession) -> list[str]:
        return await service.record_many(session=session, events=events, calendar=ctx.calendar)

    async def stage(
        events: Sequence[Event], *, session: AsyncSession, carry: service.Carry | None
    ) -> service.Staged:
        return await service.stage_many(
            session=session, events=events, calendar=ctx.calendar, carry=carry
        )

    # The ledger refuses an event id it holds: its insert is the inbox's look-up, and its rows
    # are the whole record of what was applied (keyed by event id), so applied events get no
    # inbox row. Staged, the consumer folds the next fetch while the one before is written and
    # committed.
    return dict.fromkeys(FOLDED, Batch(on_events, deduplicates=True, stage=stage, inbox_rows=False))
