"""Mediation and the dispatches it touches: a department refers a dispute to mediation; the
case opened is remembered; a mediated agreement completes the ticket's open dispatches; a failed
mediation closes the ticket's mediation dispatches and sends the ticket where the referral says.

Closing from outside the workflow takes every step the state machine needs on the way (a pending
request decided as moot, an unsigned dispatch signed for), each with the event it always has, so
intake and evaluation see the same sequence as when a department acts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.access import authorize
from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.rows import any_late, clocks_of, stop_clocks
from services.dispatch.models import Dispatch, TicketRecord
from services.dispatch.placement import mediation_requested, reroute
from services.dispatch.returns import decided, pending_extensions
from services.dispatch.rules import HandlingLine, only_line, without_line
from services.dispatch.schemas import clean_free_text
from services.dispatch.transitions import department_of, load, record, state_of, store_state
from services.dispatch.workflow import OPEN, WORKING, Action, Actor, Status, apply
from shared.auth import Principal, Role
from shared.errors import Conflict
from shared.events.base import Event
from shared.events.dispatch import (
    DispatchCompleted,
    DispatchSigned,
    DispatchWithdrawn,
    ReturnDecided,
)
from shared.events.mediation import Referral

log = logging.getLogger(__name__)

# Where a failed mediation's referral sends the ticket: the line whose routing rules place it.
# Any other referral (``none``, ``administrative``) re-routes it without the mediation line.
REFERRAL_LINES: dict[str, HandlingLine] = {
    "litigation": HandlingLine.JUDICIAL,
    "arbitration": HandlingLine.JUDICIAL,
    "legal_aid": HandlingLine.AID,
}


async def request_mediation(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    reason: str,
) -> Dispatch:
    """The handling department refers a dispute to mediation (joint conference → mediation);
    it stays responsible for the dispatch, which a mediated agreement will complete."""
    d = await load(session, dispatch_id)
    org = await ctx.org.chart(session)
    authorize(principal, d, Action.PROGRESS, Actor.DEPARTMENT, org)
    if Status(d.status) not in WORKING:
        raise Conflict(
            f"cannot request mediation for a dispatch that is {d.status}; sign for it first "
            f"(allowed from: {', '.join(sorted(s.value for s in WORKING))})",
            current=d.status,
        )
    now = ctx.now()
    d.version += 1
    d.updated_at = now
    record(
        session,
        d,
        "request_mediation",
        principal,
        before=d.status,
        after=d.status,
        now=now,
        note=reason,
    )
    await ctx.outbox.add(session, mediation_requested(d, by="department", reason=reason))
    return d


async def record_case(*, session: AsyncSession, ticket_id: str | None, case_id: str) -> None:
    """Remember the mediation case opened for a ticket."""
    if ticket_id is None:
        return
    ticket = await session.get(TicketRecord, ticket_id)
    if ticket is not None and ticket.case_id is None:
        ticket.case_id = case_id


async def _open_dispatches(
    session: AsyncSession, ticket_id: str, *, line: HandlingLine | None = None
) -> list[Dispatch]:
    """A ticket's open handling dispatches (summons aside), locked, optionally on one line."""
    query = select(Dispatch).where(col(Dispatch.ticket_id) == ticket_id)
    if line is not None:
        query = query.where(col(Dispatch.handling_line) == line.value)
    rows = (await session.execute(query.with_for_update())).scalars().all()
    return [d for d in rows if Status(d.status) in OPEN and d.status != Status.SUMMONED]


async def complete_by_agreement(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    ticket_id: str,
    case_id: str,
    summary: str,
) -> list[Dispatch]:
    """A mediated agreement completes the ticket's open handling dispatches, whatever their
    status, late when a clock the completion stops had run out. A dispatch still in the grab
    pool has no department to complete it and is withdrawn. Summons to a whistle stay:
    reporting is their own business."""
    if await session.get(TicketRecord, ticket_id) is None:
        raise LookupError(f"agreement for ticket {ticket_id} that dispatch has never routed")
    summary = clean_free_text(summary)
    result = f"调解达成协议（{case_id}）" + (f"：{summary}" if summary else "")
    done = await _close(
        session,
        ctx,
        await _open_dispatches(session, ticket_id),
        case_id=case_id,
        result=result,
        resolved=True,
        moot=f"moot: mediated agreement ({case_id})",
    )
    if not done:
        log.info("agreement %s for ticket %s: no open dispatch to complete", case_id, ticket_id)
    return done


async def fail_mediation(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    ticket_id: str,
    case_id: str,
    reason: str,
    referral: Referral,
) -> list[Dispatch]:
    """A failed mediation closes the ticket's open mediation dispatches as failed (completed,
    not resolved) and places the ticket where the referral says: litigation and arbitration
    guidance on the judicial line, legal aid on the aid line (each by that line's routing rules),
    anything else by the active rules without the mediation line. Returns the new dispatches."""
    ticket = await session.get(TicketRecord, ticket_id, with_for_update=True)
    if ticket is None:
        raise LookupError(f"failed mediation for ticket {ticket_id} that dispatch never routed")
    rows = await _open_dispatches(session, ticket_id, line=HandlingLine.MEDIATION)
    if not rows:
        log.info(
            "failed mediation %s for ticket %s: no open mediation dispatch", case_id, ticket_id
        )
        return []
    reason = clean_free_text(reason)
    result = f"调解未达成协议（{case_id}）" + (f"：{reason}" if reason else "")
    closed = await _close(
        session,
        ctx,
        rows,
        case_id=case_id,
        result=result,
        resolved=False,
        moot=f"moot: mediation failed ({case_id})",
    )
    active = (await ctx.org.rules(session)).rules
    line = REFERRAL_LINES.get(referral)
    rules = only_line(active, line) if line else without_line(active, HandlingLine.MEDIATION)
    return await reroute(
        session,
        ctx,
        ticket=ticket,
        org=await ctx.org.chart(session),
        now=ctx.now(),
        parent=(closed or rows)[0].dispatch_id,
        rules=rules,
    )


async def _close(
    session: AsyncSession,
    ctx: DispatchContext,
    rows: Sequence[Dispatch],
    *,
    case_id: str,
    result: str,
    resolved: bool,
    moot: str,
) -> list[Dispatch]:
    """Complete each dispatch with a mediation's result (withdraw a pooled one), taking the steps
    on the way; the completed dispatches."""
    now = ctx.now()
    principal = Principal(Role.OPERATOR, f"mediation:{case_id}")
    done: list[Dispatch] = []
    for d in rows:
        closing = _Closing(session, d, principal, now, data={"case_id": case_id})
        if d.status == Status.PENDING_GRAB:
            await closing.step(Action.WITHDRAW, note=moot)
            closing.store()
            await ctx.outbox.add(
                session,
                DispatchWithdrawn(
                    ticket_id=d.ticket_id,
                    dispatch_id=d.dispatch_id,
                    department_code=None,
                    reason=moot,
                ),
            )
            continue
        events = await closing.settle(moot)
        late = await closing.step(Action.COMPLETE, note=result)
        closing.store()
        d.result = result
        d.resolved = resolved
        events.append(
            DispatchCompleted(
                ticket_id=d.ticket_id,
                dispatch_id=d.dispatch_id,
                department_code=department_of(d),
                result=result,
                resolved=resolved,
                via="mediation",
                late=late,
            )
        )
        await ctx.outbox.add(session, *events)
        done.append(d)
    return done


class _Closing:
    """The steps a mediation's outcome takes on one dispatch, each applied by the state machine,
    stopping its clocks and written to the audit trail; ``store`` saves the final state."""

    def __init__(
        self,
        session: AsyncSession,
        d: Dispatch,
        principal: Principal,
        now: datetime,
        *,
        data: dict[str, Any],
    ) -> None:
        self.session, self.d, self.principal, self.now, self.data = session, d, principal, now, data
        self.state = state_of(d)

    async def step(self, action: Action, *, note: str) -> bool:
        """Apply one action; True when a clock it stopped had already run out."""
        before = self.state
        self.state = apply(before, action)
        stopped = await stop_clocks(self.session, self.d, action, self.now)
        record(
            self.session,
            self.d,
            action.value,
            self.principal,
            before=before.status.value,
            after=self.state.status.value,
            now=self.now,
            note=note,
            data=self.data,
        )
        return any_late(stopped)

    async def settle(self, moot: str) -> list[Event]:
        """Bring the dispatch to signed-for work: a pending return or extension decided as
        moot, an unsigned dispatch signed for; the events of those steps."""
        d, dept = self.d, department_of(self.d)
        events: list[Event] = []
        if self.state.status is Status.RETURN_REQUESTED:
            await self.step(Action.RETURN_DENY, note=moot)
            events.append(
                ReturnDecided(
                    ticket_id=d.ticket_id,
                    dispatch_id=d.dispatch_id,
                    department_code=dept,
                    approved=False,
                    note=moot,
                )
            )
        elif self.state.status is Status.EXTENSION_REQUESTED:
            await self.step(Action.EXTENSION_DENY, note=moot)
        events.extend(await self._moot_extensions(moot))
        if self.state.status is Status.ASSIGNED:
            late = await self.step(Action.SIGN_FOR, note=moot)
            events.append(
                DispatchSigned(
                    ticket_id=d.ticket_id,
                    dispatch_id=d.dispatch_id,
                    department_code=dept,
                    late=late,
                )
            )
        return events

    async def _moot_extensions(self, note: str) -> list[Event]:
        """Decide the pending extension requests as moot (the clock stays)."""
        pending = await pending_extensions(self.session, self.d.dispatch_id)
        if not pending:
            return []
        clocks = await clocks_of(self.session, self.d.dispatch_id)
        return [
            decided(
                request,
                self.d,
                clocks[request.clock].due_at,
                status="moot",
                by=self.principal.subject,
                at=self.now,
                note=note,
            )
            for request in pending
        ]

    def store(self) -> None:
        """Save the state the steps reached."""
        store_state(self.d, self.state, self.now)
