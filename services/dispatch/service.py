"""Dispatch's domain operations: route received tickets, run the department workflow, the grab
pool and the whistle, and complete dispatches on mediated agreements.

Every operation runs in the caller's transaction and writes its events to the outbox in that
same transaction. State changes go through ``workflow.apply`` (IllegalTransition → 409 naming
the current status); who may act is checked by ``access``. The dispatch row is read ``FOR
UPDATE`` so two concurrent actions on one dispatch serialize and the loser sees the new status.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.access import authorize, centre_scope, within
from services.dispatch.clocks import ClockName, Duration, ProfileSet, Unit
from services.dispatch.context import DispatchContext
from services.dispatch.models import (
    Dispatch,
    DispatchAction,
    DispatchClock,
    ExtensionRequest,
    GrabOffer,
    TicketRecord,
    Whistle,
)
from services.dispatch.orgchart import Department as OrgUnit
from services.dispatch.orgchart import OrgChart, UnknownDepartment
from services.dispatch.routing import HandlingMode, RoutingDecision, TicketFacts, route
from services.dispatch.schemas import ExtensionBody, SummonSpec, clean_free_text
from services.dispatch.workflow import (
    ACTOR,
    CLOCK_STOPPED_BY,
    OPEN,
    TERMINAL,
    WORKING,
    Action,
    Actor,
    DispatchState,
    IllegalTransition,
    Status,
    apply,
)
from shared.auth import Principal, Role
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.events.base import Event
from shared.events.dispatch import (
    CitizenContacted,
    DepartmentReported,
    DispatchCompleted,
    DispatchFocused,
    DispatchSigned,
    DispatchSupervised,
    DispatchTransferred,
    DispatchWithdrawn,
    ExtensionDecided,
    ExtensionRequested,
    GrabOffered,
    MediationRequested,
    ProgressNoted,
    ReturnDecided,
    ReturnRequested,
    Summons,
    TicketAssigned,
    WhistleBlown,
)
from shared.events.intake import TicketReceived

log = logging.getLogger(__name__)

# SQLModel columns typed as plain attributes: mypy cannot see their SQL operators.
D: Any = Dispatch
G: Any = GrabOffer
C: Any = DispatchClock
X: Any = ExtensionRequest

SYSTEM = Principal(Role.OPERATOR, "system")


# --------------------------------------------------------------------------------------------
# Helpers


def new_dispatch_id(ticket_id: str) -> str:
    """A dispatch id: the ticket id plus a random suffix (unguessable, so a 403 for another
    department's dispatch reveals nothing a caller could enumerate)."""
    return f"D-{ticket_id}-{secrets.token_hex(4)}"


def state_of(d: Dispatch) -> DispatchState:
    """The state machine's view of a dispatch row."""
    return DispatchState(
        status=Status(d.status),
        resume=Status(d.resume_status) if d.resume_status else None,
        supervised=d.supervised,
        supervision_count=d.supervision_count,
        focused=d.focused,
        escalation_level=d.escalation_level,
        whistles=d.whistles,
        extensions_granted=d.extensions_granted,
    )


def _store(d: Dispatch, s: DispatchState, now: datetime) -> None:
    # escalation_level belongs to the scheduler, which updates it in SQL: never written here.
    d.status = s.status.value
    d.resume_status = s.resume.value if s.resume else None
    d.supervised = s.supervised
    d.supervision_count = s.supervision_count
    d.focused = s.focused
    d.whistles = s.whistles
    d.extensions_granted = s.extensions_granted
    d.version += 1
    d.updated_at = now
    if s.status in TERMINAL and d.closed_at is None:
        d.closed_at = now


def _actor_fields(principal: Principal) -> dict[str, Any]:
    system = principal.role is Role.OPERATOR and principal.subject.startswith(
        ("system", "mediation:")
    )
    return {
        "actor_role": "system" if system else principal.role.value,
        "actor_subject": principal.subject,
        "actor_department": principal.department_code,
    }


def _record(
    session: AsyncSession,
    d: Dispatch,
    action: str,
    principal: Principal,
    *,
    before: str | None,
    after: str | None,
    now: datetime,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        DispatchAction(
            dispatch_id=d.dispatch_id,
            ticket_id=d.ticket_id,
            action=action,
            from_status=before,
            to_status=after,
            note=note,
            data=data or {},
            at=now,
            **_actor_fields(principal),
        )
    )


async def _load(session: AsyncSession, dispatch_id: str, *, lock: bool = True) -> Dispatch:
    query = select(Dispatch).where(D.dispatch_id == dispatch_id)
    if lock:
        query = query.with_for_update()
    d = (await session.execute(query)).scalars().first()
    if d is None:
        raise NotFound(f"no dispatch {dispatch_id!r}")
    return d


async def offers_of(session: AsyncSession, dispatch_id: str) -> list[str]:
    """The departments a pooled dispatch is offered to, in rank order."""
    rows = await session.execute(
        select(G.department_code).where(G.dispatch_id == dispatch_id).order_by(G.rank)
    )
    return list(rows.scalars())


async def clocks_of(session: AsyncSession, dispatch_id: str) -> dict[str, DispatchClock]:
    """A dispatch's clocks by name."""
    rows = await session.execute(select(DispatchClock).where(C.dispatch_id == dispatch_id))
    return {c.clock: c for c in rows.scalars()}


async def _stop_clocks(session: AsyncSession, d: Dispatch, action: Action, now: datetime) -> bool:
    """Stop the clocks this action stops; True when any of them had already run out."""
    late = False
    for name, clock in (await clocks_of(session, d.dispatch_id)).items():
        if clock.stopped_at is None and action in CLOCK_STOPPED_BY[ClockName(name)]:
            clock.stopped_at = now
            late = late or now > clock.due_at
    return late


def _start_clocks(
    session: AsyncSession,
    ctx: DispatchContext,
    d: Dispatch,
    start: datetime,
    *,
    due: dict[ClockName, datetime] | None = None,
) -> dict[ClockName, datetime]:
    due = due if due is not None else ctx.deadlines(ctx.profiles.get(d.time_limit_profile), start)
    for name, at in due.items():
        session.add(
            DispatchClock(
                dispatch_id=d.dispatch_id,
                clock=name.value,
                started_at=start,
                due_at=at,
                original_due_at=at,
                next_escalation_at=at,
            )
        )
    d.deadlines = {name.value: at.isoformat() for name, at in due.items()}
    return due


def _assigned(
    d: Dispatch, unit: OrgUnit, due: dict[ClockName, datetime], *, mode: str
) -> TicketAssigned:
    return TicketAssigned(
        ticket_id=d.ticket_id,
        dispatch_id=d.dispatch_id,
        department_code=unit.code,
        department_tier=unit.tier.value,
        area_code=d.area_code,
        category_code=d.category_code,
        channel=d.channel,
        handling_line=d.handling_line,
        time_limit_profile=d.time_limit_profile,
        rule_id=d.rule_id,
        deadlines={name.value: at for name, at in due.items()},
        mode=mode,
        supervised=d.supervised,
        focused=d.focused,
        rules_version=d.rules_version,
        parent_dispatch_id=d.parent_dispatch_id,
    )


def _mediation_requested(d: Dispatch, *, by: str, reason: str | None) -> MediationRequested:
    assert d.department_code is not None
    return MediationRequested(
        ticket_id=d.ticket_id,
        dispatch_id=d.dispatch_id,
        department_code=d.department_code,
        category_code=d.category_code,
        area_code=d.area_code,
        requested_by=by,
        reason=reason,
    )


def _new(
    ticket: TicketRecord,
    *,
    department: str | None,
    line: str,
    profile: str,
    mode: str,
    status: Status,
    now: datetime,
    rule_id: str | None = None,
    rules_version: str | None = None,
    parent: str | None = None,
    supervised: bool = False,
    focused: bool = False,
    whistle_id: str | None = None,
    grab_until: datetime | None = None,
) -> Dispatch:
    return Dispatch(
        dispatch_id=new_dispatch_id(ticket.ticket_id),
        ticket_id=ticket.ticket_id,
        department_code=department,
        category_code=ticket.category_code,
        channel=ticket.channel,
        area_code=ticket.area_code,
        title=ticket.title,
        handling_line=line,
        time_limit_profile=profile,
        mode=mode,
        status=status.value,
        rule_id=rule_id,
        rules_version=rules_version,
        parent_dispatch_id=parent,
        whistle_id=whistle_id,
        supervised=supervised,
        focused=focused,
        assigned_at=now,
        grab_until=grab_until,
        updated_at=now,
        deadlines={},
    )


# --------------------------------------------------------------------------------------------
# Routing


def facts_for(ticket: TicketReceived, org: OrgChart, profiles: ProfileSet) -> TicketFacts:
    """What routing looks at, from intake's ticket. An area the city does not know is dropped
    (routing then treats the area as unknown) rather than failing the ticket; the channel's
    profile is the default only if it can time an assigned dispatch (the whistle profile, with
    just a report clock, times summons, not handling)."""
    area = ticket.location.grid_code or ticket.location.area_code
    if area is not None and area not in org.tree.by_code:
        log.warning("ticket %s names unknown area %r; routing without it", ticket.ticket_id, area)
        area = None
    profile = profiles.profiles.get(ticket.time_limit_profile)
    usable = profile is not None and ClockName.SIGN_FOR in profile.clocks
    return TicketFacts(
        ticket_id=ticket.ticket_id,
        category=ticket.category_code,
        area_code=area,
        channel=ticket.channel,
        enterprise=ticket.is_enterprise,
        urgency=ticket.urgency,
        repeat_count=ticket.repeat_count,
        text=f"{ticket.title}\n{ticket.content}",
        default_profile=ticket.time_limit_profile if usable else None,
    )


async def place(
    session: AsyncSession,
    ctx: DispatchContext,
    *,
    ticket: TicketRecord,
    decision: RoutingDecision,
    org: OrgChart,
    now: datetime,
    mode: str = "assign",
    parent: str | None = None,
) -> list[Dispatch]:
    """Create the dispatches a routing decision calls for, with their clocks and events."""
    common: dict[str, Any] = {
        "line": decision.line.value,
        "profile": decision.profile,
        "now": now,
        "rule_id": decision.rule_id,
        "rules_version": decision.rules_version,
        "parent": parent,
        "focused": decision.focus,
    }
    if decision.handling is HandlingMode.GRAB and not decision.supervised:
        grab_until = now + timedelta(minutes=ctx.settings.grab_window_minutes)
        d = _new(
            ticket,
            department=None,
            mode="grab",
            status=Status.PENDING_GRAB,
            grab_until=grab_until,
            **common,
        )
        session.add(d)
        codes = [ref.code for ref in decision.departments]
        for rank, code in enumerate(codes):
            session.add(GrabOffer(dispatch_id=d.dispatch_id, department_code=code, rank=rank))
        _record(
            session,
            d,
            "offer",
            SYSTEM,
            before=None,
            after=d.status,
            now=now,
            note=decision.summary,
            data={"departments": codes, "grab_until": grab_until.isoformat()},
        )
        await ctx.outbox.add(
            session,
            GrabOffered(
                ticket_id=d.ticket_id,
                dispatch_id=d.dispatch_id,
                departments=tuple(codes),
                grab_until=grab_until,
                category_code=d.category_code,
                area_code=d.area_code,
                handling_line=d.handling_line,
                rule_id=d.rule_id,
            ),
        )
        return [d]
    created: list[Dispatch] = []
    events: list[Event] = []
    for ref in decision.departments:
        unit = org.department(ref.code)
        d = _new(
            ticket,
            department=unit.code,
            mode=mode,
            status=Status.ASSIGNED,
            supervised=decision.supervised,
            **common,
        )
        session.add(d)
        due = _start_clocks(session, ctx, d, now)
        _record(
            session,
            d,
            "assign",
            SYSTEM,
            before=None,
            after=d.status,
            now=now,
            note=decision.summary,
            data={"rule_id": decision.rule_id, "mode": mode},
        )
        events.append(_assigned(d, unit, due, mode=mode))
        if d.handling_line == "mediation":
            events.append(_mediation_requested(d, by="routing", reason=decision.summary))
        created.append(d)
    await ctx.outbox.add(session, *events)
    return created


async def route_ticket(
    *, session: AsyncSession, ctx: DispatchContext, ticket: TicketReceived
) -> list[Dispatch]:
    """Route a received ticket with the active rules and assign it (once per ticket)."""
    if await session.get(TicketRecord, ticket.ticket_id) is not None:
        return []
    org = await ctx.organisation(session)
    active = await ctx.active_rules(session)
    facts = facts_for(ticket, org, ctx.profiles)
    decision = route(facts, active.rules, org)
    now = ctx.now()
    record = TicketRecord(
        ticket_id=ticket.ticket_id,
        channel=ticket.channel,
        category_code=ticket.category_code,
        area_code=facts.area_code,
        title=ticket.title[:200],
        facts=facts.model_dump(mode="json"),
        excluded=[],
        received_at=ticket.received_at,
        routed_at=now,
    )
    session.add(record)
    return await place(session, ctx, ticket=record, decision=decision, org=org, now=now)


# --------------------------------------------------------------------------------------------
# The department workflow


@dataclass
class Step:
    """One applied transition: the dispatch, its states before and after, and context."""

    d: Dispatch
    before: DispatchState
    after: DispatchState
    org: OrgChart
    now: datetime
    late: bool


async def _step(
    session: AsyncSession,
    ctx: DispatchContext,
    *,
    dispatch_id: str,
    action: Action,
    principal: Principal,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> Step:
    """Authorize, apply the state machine, stop clocks, and write the audit row."""
    d = await _load(session, dispatch_id)
    org = await ctx.organisation(session)
    offered = await offers_of(session, dispatch_id) if d.department_code is None else []
    authorize(principal, d, action, ACTOR[action], org, offered=offered)
    before = state_of(d)
    after = apply(before, action)
    now = ctx.now()
    _store(d, after, now)
    late = await _stop_clocks(session, d, action, now)
    _record(
        session,
        d,
        action.value,
        principal,
        before=before.status.value,
        after=after.status.value,
        now=now,
        note=note,
        data=data,
    )
    if ctx.metrics is not None:
        ctx.metrics.actions.labels(action.value).inc()
    return Step(d, before, after, org, now, late)


def _dept(d: Dispatch) -> str:
    assert d.department_code is not None
    return d.department_code


async def sign_for(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    note: str | None = None,
) -> Dispatch:
    """签收: the department acknowledges the dispatch; stops the sign-for clock."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.SIGN_FOR,
        principal=principal,
        note=note,
    )
    await ctx.outbox.add(
        session,
        DispatchSigned(
            ticket_id=s.d.ticket_id,
            dispatch_id=s.d.dispatch_id,
            department_code=_dept(s.d),
            late=s.late,
        ),
    )
    return s.d


async def grab(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    note: str | None = None,
) -> Dispatch:
    """抢着办: an eligible department takes a pooled dispatch; its clocks start now."""
    if not principal.department_code:
        raise Invalid("grabbing needs the grabbing department (X-Fengqiao-Department)")
    s = await _step(
        session, ctx, dispatch_id=dispatch_id, action=Action.GRAB, principal=principal, note=note
    )
    offered = await offers_of(session, dispatch_id)
    if principal.department_code not in offered:
        raise Invalid(f"department {principal.department_code} is not offered this dispatch")
    unit = s.org.department(principal.department_code)
    s.d.department_code = unit.code
    due = _start_clocks(session, ctx, s.d, s.now)
    await session.flush()
    await _stop_clocks(session, s.d, Action.GRAB, s.now)
    await ctx.outbox.add(
        session,
        _assigned(s.d, unit, due, mode="grab"),
        DispatchSigned(
            ticket_id=s.d.ticket_id,
            dispatch_id=s.d.dispatch_id,
            department_code=unit.code,
            via="grab",
        ),
    )
    if s.d.handling_line == "mediation":
        await ctx.outbox.add(session, _mediation_requested(s.d, by="routing", reason=None))
    return s.d


async def request_return(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    reason: str,
) -> Dispatch:
    """退单: the department says the matter is not its business; the centre decides."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.RETURN_REQUEST,
        principal=principal,
        note=reason,
    )
    await ctx.outbox.add(
        session,
        ReturnRequested(
            ticket_id=s.d.ticket_id,
            dispatch_id=s.d.dispatch_id,
            department_code=_dept(s.d),
            reason=reason,
        ),
    )
    return s.d


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
    s = await _step(
        session, ctx, dispatch_id=dispatch_id, action=action, principal=principal, note=note
    )
    rerouted: list[Dispatch] = []
    if approve:
        ticket = await session.get(TicketRecord, s.d.ticket_id, with_for_update=True)
        if ticket is None:
            raise NotFound(f"ticket {s.d.ticket_id} is unknown to dispatch")
        ticket.excluded = sorted({*ticket.excluded, _dept(s.d)})
        active = await ctx.active_rules(session)
        facts = TicketFacts.model_validate(ticket.facts)
        decision = route(facts, active.rules, s.org, exclude=ticket.excluded)
        rerouted = await place(
            session,
            ctx,
            ticket=ticket,
            decision=decision,
            org=s.org,
            now=s.now,
            mode="reroute",
            parent=s.d.dispatch_id,
        )
    await ctx.outbox.add(
        session,
        ReturnDecided(
            ticket_id=s.d.ticket_id,
            dispatch_id=s.d.dispatch_id,
            department_code=_dept(s.d),
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
    s = await _step(
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
    ticket = await session.get(TicketRecord, s.d.ticket_id)
    if ticket is None:
        raise NotFound(f"ticket {s.d.ticket_id} is unknown to dispatch")
    new = _new(
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
    due = _start_clocks(session, ctx, new, s.now)
    _record(
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
            from_department=_dept(s.d),
            to_department=unit.code,
            new_dispatch_id=new.dispatch_id,
            reason=reason,
        ),
        _assigned(new, unit, due, mode="transfer"),
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
    s = await _step(
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
            department_code=_dept(s.d),
            request_id=request.id,
            clock=body.clock.value,
            amount=amount,
            unit=unit.value,
            reason=body.reason,
        ),
    )
    return s.d, request


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
    s = await _step(
        session, ctx, dispatch_id=dispatch_id, action=action, principal=principal, note=note
    )
    request = (
        (
            await session.execute(
                select(ExtensionRequest)
                .where(X.dispatch_id == dispatch_id, X.status == "pending")
                .order_by(X.id.desc())
            )
        )
        .scalars()
        .first()
    )
    if request is None:
        raise Conflict(f"dispatch {dispatch_id} has no pending extension request")
    clock = (await clocks_of(session, dispatch_id))[request.clock]
    old_due = clock.due_at
    request.status = "approved" if approve else "denied"
    request.decided_by = principal.subject
    request.decided_at = s.now
    request.decision_note = note
    request.old_due_at = old_due
    new_due: datetime | None = None
    if approve:
        profile = ctx.profiles.get(s.d.time_limit_profile)
        by = Duration(request.amount, Unit(request.unit))
        new_due = ctx.extend(profile, ClockName(request.clock), old_due, by)
        clock.due_at = new_due
        clock.next_escalation_at = new_due if clock.stopped_at is None else None
        request.new_due_at = new_due
        deadlines = dict(s.d.deadlines)
        deadlines[request.clock] = new_due.isoformat()
        s.d.deadlines = deadlines
    assert request.id is not None
    await ctx.outbox.add(
        session,
        ExtensionDecided(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=_dept(s.d),
            request_id=request.id,
            clock=request.clock,
            approved=approve,
            old_due_at=old_due,
            new_due_at=new_due,
            note=note,
        ),
    )
    return s.d, request


async def note_progress(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    note: str,
) -> Dispatch:
    """A progress note (stops the feedback clock)."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.PROGRESS,
        principal=principal,
        note=note,
    )
    await ctx.outbox.add(
        session,
        ProgressNoted(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=_dept(s.d),
            note=note,
            late=s.late,
        ),
    )
    return s.d


async def contact(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    method: str,
    note: str | None,
) -> Dispatch:
    """The citizen was contacted (stops the first-contact and feedback clocks)."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.CONTACT,
        principal=principal,
        note=note,
        data={"method": method},
    )
    await ctx.outbox.add(
        session,
        CitizenContacted(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=_dept(s.d),
            method=method,
            note=note,
            late=s.late,
        ),
    )
    return s.d


async def complete(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    result: str,
    resolved: bool,
) -> Dispatch:
    """办结: the department completes the dispatch with its result."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.COMPLETE,
        principal=principal,
        note=result,
        data={"resolved": resolved},
    )
    s.d.result = result
    s.d.resolved = resolved
    await ctx.outbox.add(
        session,
        DispatchCompleted(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=_dept(s.d),
            result=result,
            resolved=resolved,
            late=s.late,
        ),
    )
    return s.d


async def supervise(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    note: str,
) -> Dispatch:
    """督办: the centre presses the department; the dispatch is marked supervised."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.SUPERVISE,
        principal=principal,
        note=note,
    )
    await ctx.outbox.add(
        session,
        DispatchSupervised(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=s.d.department_code,
            note=note,
            count=s.after.supervision_count,
        ),
    )
    return s.d


async def focus(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    note: str | None,
) -> Dispatch:
    """重点办: the centre flags a hard dispatch for focused leadership handling."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.FOCUS,
        principal=principal,
        note=note,
    )
    await ctx.outbox.add(
        session,
        DispatchFocused(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=s.d.department_code,
            note=note,
        ),
    )
    return s.d


async def withdraw(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    reason: str,
) -> Dispatch:
    """The centre closes a dispatch without handling (a duplicate, or the citizen withdrew)."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.WITHDRAW,
        principal=principal,
        note=reason,
    )
    await ctx.outbox.add(
        session,
        DispatchWithdrawn(
            ticket_id=s.d.ticket_id,
            dispatch_id=dispatch_id,
            department_code=s.d.department_code,
            reason=reason,
        ),
    )
    return s.d


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
    d = await _load(session, dispatch_id)
    org = await ctx.organisation(session)
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
    _record(
        session,
        d,
        "request_mediation",
        principal,
        before=d.status,
        after=d.status,
        now=now,
        note=reason,
    )
    await ctx.outbox.add(session, _mediation_requested(d, by="department", reason=reason))
    return d


# --------------------------------------------------------------------------------------------
# Whistle (吹哨) and report (报到)


async def blow_whistle(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    ticket_id: str,
    principal: Principal,
    reason: str,
    summons: Sequence[SummonSpec],
    source_dispatch_id: str | None = None,
) -> tuple[Whistle, list[Dispatch]]:
    """Summon several departments to report on a ticket, each within its own deadline."""
    ticket = await session.get(TicketRecord, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id!r} in dispatch")
    org = await ctx.organisation(session)
    now = ctx.now()
    source = await _whistle_source(
        session,
        ctx,
        ticket=ticket,
        principal=principal,
        org=org,
        source_dispatch_id=source_dispatch_id,
    )
    if len(summons) > ctx.settings.whistle_max_summons:
        raise Invalid(f"summons: at most {ctx.settings.whistle_max_summons} departments")
    codes = [s.department_code for s in summons]
    if len(set(codes)) != len(codes):
        raise Invalid("summons: a department is summoned twice")
    units: list[OrgUnit] = []
    for index, code in enumerate(codes):
        try:
            units.append(org.department(code))
        except UnknownDepartment:
            raise Invalid(
                f"summons[{index}].department_code: no active department {code!r}"
            ) from None
        if code == principal.department_code:
            raise Invalid(f"summons[{index}].department_code: a department cannot summon itself")
    waiting = (
        (
            await session.execute(
                select(D.department_code).where(
                    D.ticket_id == ticket_id,
                    D.status == Status.SUMMONED.value,
                    D.department_code.in_(codes),
                )
            )
        )
        .scalars()
        .all()
    )
    if waiting:
        raise Conflict(f"already summoned on this ticket and not yet reported: {sorted(waiting)}")
    whistle = Whistle(
        whistle_id=f"W-{ticket_id}-{secrets.token_hex(3)}",
        ticket_id=ticket_id,
        reason=reason,
        blown_by_role=principal.role.value,
        blown_by_subject=principal.subject,
        blown_by_department=principal.department_code,
        source_dispatch_id=source.dispatch_id if source else None,
        blown_at=now,
    )
    session.add(whistle)
    profile = ctx.profiles.get("whistle")
    default_due = ctx.deadlines(profile, now)
    created: list[Dispatch] = []
    parts: list[Summons] = []
    for spec, unit in zip(summons, units, strict=True):
        d = _new(
            ticket,
            department=unit.code,
            line=source.handling_line if source else "normal",
            profile="whistle",
            mode="whistle",
            status=Status.SUMMONED,
            now=now,
            parent=source.dispatch_id if source else None,
            whistle_id=whistle.whistle_id,
        )
        due = (
            {ClockName.REPORT: now + timedelta(minutes=spec.report_within_minutes)}
            if spec.report_within_minutes
            else dict(default_due)
        )
        session.add(d)
        _start_clocks(session, ctx, d, now, due=due)
        _record(
            session,
            d,
            "summon",
            principal,
            before=None,
            after=d.status,
            now=now,
            note=reason,
            data={"whistle_id": whistle.whistle_id},
        )
        created.append(d)
        parts.append(
            Summons(
                department_code=unit.code,
                dispatch_id=d.dispatch_id,
                report_due_at=due[ClockName.REPORT],
            )
        )
    await ctx.outbox.add(
        session,
        WhistleBlown(
            ticket_id=ticket_id,
            whistle_id=whistle.whistle_id,
            blown_by_role=principal.role.value,
            blown_by_department=principal.department_code,
            reason=reason,
            summons=tuple(parts),
        ),
    )
    return whistle, created


async def _whistle_source(
    session: AsyncSession,
    ctx: DispatchContext,
    *,
    ticket: TicketRecord,
    principal: Principal,
    org: OrgChart,
    source_dispatch_id: str | None,
) -> Dispatch | None:
    """Who may blow the whistle on a ticket, and the blowing department's own dispatch.

    Centres within whose jurisdiction the ticket lies; a grid worker whose grid and the ticket's
    area overlap (or whose unit holds a dispatch on it); a department handling the ticket (its
    dispatch records the whistle); operators.
    """
    role = principal.role
    if role is Role.OPERATOR:
        return None
    if role is Role.CENTRE:
        scope = centre_scope(principal, org)
        if not within(org, ticket.area_code, scope):
            raise Forbidden(f"ticket {ticket.ticket_id} is outside this centre's jurisdiction")
        return None
    if role not in (Role.DEPARTMENT, Role.GRID_WORKER) or not principal.department_code:
        raise Forbidden(f"role {role} may not blow the whistle")
    mine = (
        (
            await session.execute(
                select(Dispatch).where(
                    D.ticket_id == ticket.ticket_id,
                    D.department_code == principal.department_code,
                    D.status.in_([s.value for s in WORKING]),
                )
            )
        )
        .scalars()
        .all()
    )
    if source_dispatch_id is not None:
        mine = [d for d in mine if d.dispatch_id == source_dispatch_id]
    if mine:
        s = await _step(
            session,
            ctx,
            dispatch_id=mine[0].dispatch_id,
            action=Action.WHISTLE,
            principal=principal,
        )
        return s.d
    if role is Role.GRID_WORKER:
        unit = org.departments.get(principal.department_code)
        area = ticket.area_code
        if unit is not None and area is not None and area in org.tree.by_code:
            tree = org.tree
            if tree.is_within(area, unit.jurisdiction) or tree.is_within(unit.jurisdiction, area):
                return None
        raise Forbidden(f"ticket {ticket.ticket_id} is not in grid worker's grid")
    raise Forbidden(
        f"department {principal.department_code} has no dispatch in hand on ticket "
        f"{ticket.ticket_id}; sign for it first"
    )


async def report(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    note: str | None = None,
) -> Dispatch:
    """报到: a summoned department reports to the whistle; on time or late, it is recorded."""
    s = await _step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=Action.REPORT,
        principal=principal,
        note=note,
    )
    clock = (await clocks_of(session, dispatch_id))[ClockName.REPORT.value]
    assert s.d.whistle_id is not None
    await ctx.outbox.add(
        session,
        DepartmentReported(
            ticket_id=s.d.ticket_id,
            whistle_id=s.d.whistle_id,
            dispatch_id=dispatch_id,
            department_code=_dept(s.d),
            report_due_at=clock.due_at,
            reported_at=s.now,
            on_time=not s.late,
        ),
    )
    return s.d


# --------------------------------------------------------------------------------------------
# Mediation outcomes


async def record_case(*, session: AsyncSession, ticket_id: str | None, case_id: str) -> None:
    """Remember the mediation case opened for a ticket."""
    if ticket_id is None:
        return
    ticket = await session.get(TicketRecord, ticket_id)
    if ticket is not None and ticket.case_id is None:
        ticket.case_id = case_id


async def complete_by_agreement(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    ticket_id: str,
    case_id: str,
    summary: str,
) -> list[Dispatch]:
    """A mediated agreement completes the ticket's open handling dispatches, whatever their
    status: a pending return or extension request is decided as moot, an unsigned dispatch is
    signed for on the way (each with the event that step always has), and the completion is late
    when a clock it stops had run out. A dispatch still in the grab pool has no department to
    complete it and is withdrawn. Summons to a whistle stay: reporting is their own business."""
    rows = (
        (await session.execute(select(Dispatch).where(D.ticket_id == ticket_id).with_for_update()))
        .scalars()
        .all()
    )
    if not rows:
        raise LookupError(f"agreement for ticket {ticket_id} that dispatch has never routed")
    now = ctx.now()
    principal = Principal(Role.OPERATOR, f"mediation:{case_id}")
    summary = clean_free_text(summary)
    result = f"调解达成协议（{case_id}）" + (f"：{summary}" if summary else "")
    moot = f"moot: mediated agreement ({case_id})"
    done: list[Dispatch] = []
    for d in rows:
        status = Status(d.status)
        if status not in OPEN or status is Status.SUMMONED:
            continue
        closing = _Closing(session, d, principal, now, data={"case_id": case_id})
        if status is Status.PENDING_GRAB:
            await closing.step(Action.WITHDRAW, note=moot)
            closing.store()
            await ctx.outbox.add(
                session,
                DispatchWithdrawn(
                    ticket_id=ticket_id,
                    dispatch_id=d.dispatch_id,
                    department_code=None,
                    reason=moot,
                ),
            )
            continue
        dept = _dept(d)
        events: list[Event] = []
        if status is Status.RETURN_REQUESTED:
            await closing.step(Action.RETURN_DENY, note=moot)
            events.append(
                ReturnDecided(
                    ticket_id=ticket_id,
                    dispatch_id=d.dispatch_id,
                    department_code=dept,
                    approved=False,
                    note=moot,
                )
            )
        elif status is Status.EXTENSION_REQUESTED:
            await closing.step(Action.EXTENSION_DENY, note=moot)
        events.extend(await _moot_extensions(session, d, principal, now, note=moot))
        if closing.state.status is Status.ASSIGNED:
            late = await closing.step(Action.SIGN_FOR, note=moot)
            events.append(
                DispatchSigned(
                    ticket_id=ticket_id, dispatch_id=d.dispatch_id, department_code=dept, late=late
                )
            )
        late = await closing.step(Action.COMPLETE, note=result)
        closing.store()
        d.result = result
        d.resolved = True
        events.append(
            DispatchCompleted(
                ticket_id=ticket_id,
                dispatch_id=d.dispatch_id,
                department_code=dept,
                result=result,
                resolved=True,
                via="mediation",
                late=late,
            )
        )
        await ctx.outbox.add(session, *events)
        done.append(d)
    if not done:
        log.info("agreement %s for ticket %s: no open dispatch to complete", case_id, ticket_id)
    return done


class _Closing:
    """The steps a mediated agreement takes on one dispatch, each applied by the state machine,
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
        late = await _stop_clocks(self.session, self.d, action, self.now)
        _record(
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
        return late

    def store(self) -> None:
        _store(self.d, self.state, self.now)


async def _moot_extensions(
    session: AsyncSession, d: Dispatch, principal: Principal, now: datetime, *, note: str
) -> list[Event]:
    """Decide a dispatch's pending extension requests as moot (the clock stays), with the
    ``ExtensionDecided`` every decided request has."""
    pending = (
        (
            await session.execute(
                select(ExtensionRequest)
                .where(X.dispatch_id == d.dispatch_id, X.status == "pending")
                .order_by(X.id)
            )
        )
        .scalars()
        .all()
    )
    if not pending:
        return []
    clocks = await clocks_of(session, d.dispatch_id)
    events: list[Event] = []
    for request in pending:
        old_due = clocks[request.clock].due_at
        request.status = "moot"
        request.decided_by = principal.subject
        request.decided_at = now
        request.decision_note = note
        request.old_due_at = old_due
        assert request.id is not None
        events.append(
            ExtensionDecided(
                ticket_id=d.ticket_id,
                dispatch_id=d.dispatch_id,
                department_code=_dept(d),
                request_id=request.id,
                clock=request.clock,
                approved=False,
                old_due_at=old_due,
                note=note,
            )
        )
    return events


__all__ = [
    "IllegalTransition",
    "blow_whistle",
    "complete",
    "complete_by_agreement",
    "contact",
    "decide_extension",
    "decide_return",
    "focus",
    "grab",
    "note_progress",
    "place",
    "record_case",
    "report",
    "request_extension",
    "request_mediation",
    "request_return",
    "route_ticket",
    "sign_for",
    "supervise",
    "transfer",
    "withdraw",
]
