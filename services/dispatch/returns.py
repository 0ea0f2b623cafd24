"""Returns (退单), transfers (转办) and extensions (延期): a department hands work back, on, or
asks for more time; the centre decides returns and extensions. (A return request itself is a
one-step action in ``actions.py``.)"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.profiles import ClockName, Duration, Unit
from services.dispatch.deadlines.rows import clocks_of, start_clocks
from services.dispatch.models import Dispatch, ExtensionRequest, TicketRecord
from services.dispatch.organisation.chart import UnknownDepartment
from services.dispatch.placement import assigned_event, excluding, new_dispatch, reroute
from services.dispatch.schemas import ExtensionBody
from services.dispatch.transitions import record, step
from services.dispatch.workflow import Action, Status
from shared.auth import Principal
from shared.errors import Conflict, Invalid, NotFound
from shared.events.dispatch import (
    DispatchTransferred,
    ExtensionDecided,
    ExtensionRequested,
    ReturnDecided,
)


async def _ticket(session: AsyncSession, ticket_id: str, *, lock: bool = False) -> TicketRecord:
    ticket = await session.get(TicketRecord, ticket_id, with_for_update=lock)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} is unknown to dispatch")
    return ticket


async def decide_return(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    approve: bool,
    note: str | None = None,
) -> tuple[Dispatch, list[Dispatch]]:
    """The centre approves a return (the ticket is re-routed without that department, and
    without any department that returned it before) or denies it (back to work)."""
    action = Action.RETURN_APPROVE if approve else Action.RETURN_DENY
    s = await step(
        session, ctx, dispatch_id=dispatch_id, action=action, principal=principal, note=note
    )
    rerouted: list[Dispatch] = []
    if approve:
        ticket = await _ticket(session, s.d.ticket_id, lock=True)
        excluding(ticket, [s.department])
        rerouted = await reroute(
            session, ctx, ticket=ticket, org=s.org, now=s.now, parent=s.d.dispatch_id
        )
    await ctx.outbox.add(
        session,
        ReturnDecided(
            ticket_id=s.d.ticket_id,
            dispatch_id=s.d.dispatch_id,
            department_code=s.department,
            approved=approve,
            note=note,
            rerouted_to=tuple(d.department_code or "pool" for d in rerouted),
        ),
    )
    return s.d, rerouted


async def transfer(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    to_department: str,
    reason: str,
) -> tuple[Dispatch, Dispatch]:
    """转办: the department hands the dispatch to another; fresh clocks start for the receiver."""
    s = await step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.TRANSFER,
        principal=principal,
        note=reason,
        data={"to_department": to_department},
    )
    try:
        unit = s.org.department(to_department)
    except UnknownDepartment:
        raise Invalid(f"to_department: no active department {to_department!r}") from None
    if unit.code == s.d.department_code:
        raise Invalid("to_department: a dispatch cannot be transferred to its own department")
    ticket = await _ticket(session, s.d.ticket_id)
    new = new_dispatch(
        ticket,
        department=unit.code,
        line=s.d.handling_line,
        profile=s.d.time_limit_profile,
        mode="transfer",
        status=Status.ASSIGNED,
        now=s.now,
        rule_id=s.d.rule_id,
        rules_version=s.d.rules_version,
        parent=s.d.dispatch_id,
        supervised=s.d.supervised,
        focused=s.d.focused,
    )
    session.add(new)
    due = start_clocks(session, ctx, new, s.now)
    record(
        session,
        new,
        "assign",
        principal,
        before=None,
        after=new.status,
        now=s.now,
        note=reason,
        data={"transferred_from": s.d.dispatch_id},
    )
    await ctx.outbox.add(
        session,
        DispatchTransferred(
            ticket_id=s.d.ticket_id,
            dispatch_id=s.d.dispatch_id,
            from_department=s.department,
            to_department=unit.code,
            new_dispatch_id=new.dispatch_id,
            reason=reason,
        ),
        assigned_event(new, unit, due, mode="transfer"),
    )
    return s.d, new


async def request_extension(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    body: ExtensionBody,
) -> tuple[Dispatch, ExtensionRequest]:
    """The department asks the centre for more time on one running clock."""
    amount, unit = body.amount()
    s = await step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.EXTENSION_REQUEST,
        principal=principal,
        note=body.reason,
        data={"clock": body.clock.value, "amount": amount, "unit": unit.value},
    )
    clock = (await clocks_of(session, dispatch_id)).get(body.clock.value)
    if clock is None:
        raise Invalid(f"clock: the dispatch has no {body.clock.value} clock")
    if clock.stopped_at is not None:
        raise Invalid(f"clock: the {body.clock.value} clock has already stopped")
    request = ExtensionRequest(
        dispatch_id=dispatch_id,
        clock=body.clock.value,
        amount=amount,
        unit=unit.value,
        reason=body.reason,
        status="pending",
        requested_by=principal.subject,
        requested_at=s.now,
        old_due_at=clock.due_at,
    )
    session.add(request)
    await session.flush()
    assert request.id is not None
    await ctx.outbox.add(
        session,
        ExtensionRequested(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=s.department,
            request_id=request.id,
            clock=body.clock.value,
            amount=amount,
            unit=unit.value,
            reason=body.reason,
        ),
    )
    return s.d, request


async def pending_extensions(session: AsyncSession, dispatch_id: str) -> list[ExtensionRequest]:
    """A dispatch's undecided extension requests, oldest first."""
    rows = await session.execute(
        select(ExtensionRequest)
        .where(
            col(ExtensionRequest.dispatch_id) == dispatch_id,
            col(ExtensionRequest.status) == "pending",
        )
        .order_by(col(ExtensionRequest.id))
    )
    return list(rows.scalars())


def decided(
    request: ExtensionRequest,
    d: Dispatch,
    old_due: datetime,
    *,
    status: str,
    by: str,
    at: datetime,
    note: str | None,
    new_due: datetime | None = None,
) -> ExtensionDecided:
    """Record a decision on an extension request, and its event."""
    request.status = status
    request.decided_by = by
    request.decided_at = at
    request.decision_note = note
    request.old_due_at = old_due
    request.new_due_at = new_due
    assert request.id is not None and d.department_code is not None
    return ExtensionDecided(
        ticket_id=d.ticket_id,
        dispatch_id=d.dispatch_id,
        department_code=d.department_code,
        request_id=request.id,
        clock=request.clock,
        approved=status == "approved",
        old_due_at=old_due,
        new_due_at=new_due,
        note=note,
    )


async def decide_extension(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    approve: bool,
    note: str | None = None,
) -> tuple[Dispatch, ExtensionRequest]:
    """The centre approves (the clock moves; the request row is the audit record) or denies."""
    action = Action.EXTENSION_APPROVE if approve else Action.EXTENSION_DENY
    s = await step(
        session, ctx, dispatch_id=dispatch_id, action=action, principal=principal, note=note
    )
    pending = await pending_extensions(session, dispatch_id)
    if not pending:
        raise Conflict(f"dispatch {dispatch_id} has no pending extension request")
    request = pending[-1]
    clock = (await clocks_of(session, dispatch_id))[request.clock]
    old_due = clock.due_at
    new_due: datetime | None = None
    if approve:
        profile = ctx.profiles.get(s.d.time_limit_profile)
        by = Duration(request.amount, Unit(request.unit))
        new_due = ctx.deadlines.extend(profile, ClockName(request.clock), old_due, by)
        clock.due_at = new_due
        clock.next_escalation_at = new_due if clock.stopped_at is None else None
        s.d.deadlines = {**s.d.deadlines, request.clock: new_due.isoformat()}
    event = decided(
        request,
        s.d,
        old_due,
        status="approved" if approve else "denied",
        by=principal.subject,
        at=s.now,
        note=note,
        new_due=new_due,
    )
    await ctx.outbox.add(session, event)
    return s.d, request
