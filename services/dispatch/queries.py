"""Dispatch's read side: inboxes, dispatch details, the grab pool, whistle boards, escalations.

Reads follow the same access policy as writes (``access.authorize_read``): another
department's dispatch is 403, an unknown id 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.access import DEPARTMENT_ROLES, authorize_read, centre_scope
from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.rows import clocks_of
from services.dispatch.models import (
    DepartmentRow,
    Dispatch,
    DispatchAction,
    DispatchClock,
    Escalation,
    ExtensionRequest,
    GrabOffer,
    Whistle,
)
from services.dispatch.routing import RoutingDecision, TicketFacts, route
from services.dispatch.rules import load_rules
from services.dispatch.schemas import (
    ActionPublic,
    BoardRow,
    ClockPublic,
    DispatchDetail,
    DispatchPublic,
    DryRunRequest,
    EscalationPublic,
    ExtensionPublic,
    InboxItem,
    InboxPage,
    WhistleBoard,
)
from services.dispatch.transitions import offers_of
from services.dispatch.workflow import Status, allowed_actions
from shared.auth import Principal, Role
from shared.errors import Forbidden, Invalid, NotFound


def clock_state(clock: DispatchClock, now: datetime) -> str:
    """running | overdue | stopped | stopped_late."""
    if clock.stopped_at is None:
        return "overdue" if now > clock.due_at else "running"
    return "stopped_late" if clock.stopped_at > clock.due_at else "stopped"


def _clock_public(clock: DispatchClock, now: datetime) -> ClockPublic:
    out = ClockPublic.model_validate(clock)
    return out.model_copy(update={"state": clock_state(clock, now)})


async def detail(
    *, session: AsyncSession, ctx: DispatchContext, dispatch_id: str, principal: Principal
) -> DispatchDetail:
    """One dispatch with its clocks, history, extension requests and escalations."""
    d = await session.get(Dispatch, dispatch_id)
    if d is None:
        raise NotFound(f"no dispatch {dispatch_id!r}")
    org = await ctx.org.chart(session)
    offered = await offers_of(session, dispatch_id)
    authorize_read(principal, d, org, offered=offered)
    now = ctx.now()
    clocks = await clocks_of(session, dispatch_id)
    actions = (
        await session.execute(
            select(DispatchAction)
            .where(col(DispatchAction.dispatch_id) == dispatch_id)
            .order_by(col(DispatchAction.id))
        )
    ).scalars()
    extensions = (
        await session.execute(
            select(ExtensionRequest)
            .where(col(ExtensionRequest.dispatch_id) == dispatch_id)
            .order_by(col(ExtensionRequest.id))
        )
    ).scalars()
    escalations = (
        await session.execute(
            select(Escalation)
            .where(col(Escalation.dispatch_id) == dispatch_id)
            .order_by(col(Escalation.id))
        )
    ).scalars()
    base = DispatchPublic.model_validate(d).model_dump()
    return DispatchDetail(
        **base,
        clocks=[_clock_public(c, now) for c in sorted(clocks.values(), key=lambda c: c.due_at)],
        allowed_actions=[a.value for a in allowed_actions(Status(d.status))],
        offered_to=offered,
        actions=[ActionPublic.model_validate(a) for a in actions],
        extensions=[ExtensionPublic.model_validate(e) for e in extensions],
        escalations=[EscalationPublic.model_validate(e) for e in escalations],
    )


async def ticket_dispatches(
    *, session: AsyncSession, ctx: DispatchContext, ticket_id: str, principal: Principal
) -> list[Dispatch]:
    """The dispatches of one ticket the caller may read; 404 if dispatch has none, 403 if the
    caller may read none of them."""
    rows = (
        (
            await session.execute(
                select(Dispatch)
                .where(col(Dispatch.ticket_id) == ticket_id)
                .order_by(col(Dispatch.assigned_at), col(Dispatch.dispatch_id))
            )
        )
        .scalars()
        .all()
    )
    if not rows:
        raise NotFound(f"no dispatch for ticket {ticket_id!r}")
    org = await ctx.org.chart(session)
    readable = []
    for d in rows:
        offered = await offers_of(session, d.dispatch_id) if d.department_code is None else []
        try:
            authorize_read(principal, d, org, offered=offered)
        except Forbidden:
            continue
        readable.append(d)
    if not readable:
        raise Forbidden(f"ticket {ticket_id} has no dispatch of yours")
    return readable


async def inbox(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    principal: Principal,
    department: str | None,
    statuses: Sequence[str] = (),
    overdue: bool | None = None,
    line: str | None = None,
    mode: str | None = None,
    ticket_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> InboxPage:
    """A department's dispatches, most urgent first (the nearest running deadline), filtered
    and paginated. Departments see only their own; centres any department in their
    jurisdiction; the committee and operators any."""
    org = await ctx.org.chart(session)
    role = principal.role
    query = select(Dispatch)
    if role in DEPARTMENT_ROLES:
        mine = principal.department_code
        if department is not None and department != mine:
            raise Forbidden(f"the inbox of {department} is not yours")
        department = mine
    elif role is Role.CENTRE:
        scope = centre_scope(principal, org)
        if scope is not None:
            if department is None:
                raise Forbidden("a scoped centre names the department whose inbox it reads")
            unit = org.departments.get(department)
            if unit is None or not org.tree.is_within(unit.jurisdiction, scope.jurisdiction):
                raise Forbidden(f"{department} is outside the jurisdiction of {scope.code}")
    elif role not in (Role.OPERATOR, Role.COMMITTEE):
        raise Forbidden(f"role {role} has no inbox")
    if department is not None:
        query = query.where(col(Dispatch.department_code) == department)
    if statuses:
        query = query.where(col(Dispatch.status).in_(list(statuses)))
    if line is not None:
        query = query.where(col(Dispatch.handling_line) == line)
    if mode is not None:
        query = query.where(col(Dispatch.mode) == mode)
    if ticket_id is not None:
        query = query.where(col(Dispatch.ticket_id) == ticket_id)
    now = ctx.now()
    running_late = exists().where(
        col(DispatchClock.dispatch_id) == col(Dispatch.dispatch_id),
        col(DispatchClock.stopped_at).is_(None),
        col(DispatchClock.due_at) < now,
    )
    if overdue is True:
        query = query.where(running_late)
    elif overdue is False:
        query = query.where(~running_late)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    next_due = (
        select(func.min(col(DispatchClock.due_at)))
        .where(
            col(DispatchClock.dispatch_id) == col(Dispatch.dispatch_id),
            col(DispatchClock.stopped_at).is_(None),
        )
        .correlate(Dispatch)
        .scalar_subquery()
    )
    page = (
        await session.execute(
            query.add_columns(next_due.label("next_due"))
            .order_by(
                next_due.is_(None),
                next_due,
                col(Dispatch.assigned_at).desc(),
                col(Dispatch.dispatch_id),
            )
            .limit(limit)
            .offset(offset)
        )
    ).all()
    ids = [row[0].dispatch_id for row in page]
    late: dict[str, list[str]] = {}
    if ids:
        for dispatch_id, clock in (
            await session.execute(
                select(col(DispatchClock.dispatch_id), col(DispatchClock.clock)).where(
                    col(DispatchClock.dispatch_id).in_(ids),
                    col(DispatchClock.stopped_at).is_(None),
                    col(DispatchClock.due_at) < now,
                )
            )
        ).all():
            late.setdefault(dispatch_id, []).append(clock)
    items = []
    for d, due in page:
        base = DispatchPublic.model_validate(d).model_dump()
        items.append(
            InboxItem(
                **base,
                next_due_at=_aware(due),
                overdue_clocks=sorted(late.get(d.dispatch_id, [])),
            )
        )
    return InboxPage(items=items, total=int(total), limit=limit, offset=offset)


def _aware(value: Any) -> datetime | None:
    # A scalar subquery over an AwareDateTime column comes back raw on SQLite.
    from datetime import UTC

    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def grab_pool(
    *, session: AsyncSession, ctx: DispatchContext, principal: Principal, department: str | None
) -> list[Dispatch]:
    """Pooled dispatches a department may grab, soonest-expiring first."""
    if principal.role in DEPARTMENT_ROLES:
        department = principal.department_code
    elif principal.role not in (Role.OPERATOR, Role.CENTRE, Role.COMMITTEE):
        raise Forbidden(f"role {principal.role} has no grab pool")
    query = select(Dispatch).where(col(Dispatch.status) == Status.PENDING_GRAB.value)
    if department is not None:
        query = query.where(
            exists().where(
                col(GrabOffer.dispatch_id) == col(Dispatch.dispatch_id),
                col(GrabOffer.department_code) == department,
            )
        )
    rows = await session.execute(
        query.order_by(col(Dispatch.grab_until), col(Dispatch.dispatch_id)).limit(200)
    )
    return list(rows.scalars())


async def whistle_board(
    *, session: AsyncSession, ctx: DispatchContext, whistle_id: str, principal: Principal
) -> WhistleBoard:
    """Who was summoned, who reported (on time or late), who is still awaited or late."""
    if principal.role is Role.HOTLINE:
        raise Forbidden("the hotline does not read whistle boards")
    whistle = await session.get(Whistle, whistle_id)
    if whistle is None:
        raise NotFound(f"no whistle {whistle_id!r}")
    now = ctx.now()
    rows = (
        await session.execute(
            select(Dispatch, DispatchClock, col(DepartmentRow.name_zh))
            .join(
                DispatchClock,
                and_(
                    col(DispatchClock.dispatch_id) == col(Dispatch.dispatch_id),
                    col(DispatchClock.clock) == "report",
                ),
            )
            .outerjoin(DepartmentRow, col(DepartmentRow.code) == col(Dispatch.department_code))
            .where(col(Dispatch.whistle_id) == whistle_id)
            .order_by(col(DispatchClock.due_at), col(Dispatch.department_code))
        )
    ).all()
    board: list[BoardRow] = []
    for d, clock, name in rows:
        reported = clock.stopped_at if d.status == Status.REPORTED.value else None
        if reported is not None:
            state = "reported" if reported <= clock.due_at else "reported_late"
            late_by = max(0, int((reported - clock.due_at).total_seconds()))
        elif now > clock.due_at:
            state, late_by = "late", int((now - clock.due_at).total_seconds())
        else:
            state, late_by = "waiting", 0
        board.append(
            BoardRow(
                department_code=d.department_code,
                name_zh=name,
                dispatch_id=d.dispatch_id,
                report_due_at=clock.due_at,
                reported_at=reported,
                state=state,  # type: ignore[arg-type]
                late_by_seconds=late_by if state in ("late", "reported_late") else None,
            )
        )
    counts = {k: sum(1 for r in board if r.state == k) for k in ("reported", "reported_late")}
    counts |= {k: sum(1 for r in board if r.state == k) for k in ("waiting", "late")}
    return WhistleBoard(
        whistle_id=whistle.whistle_id,
        ticket_id=whistle.ticket_id,
        reason=whistle.reason,
        blown_by_role=whistle.blown_by_role,
        blown_by_department=whistle.blown_by_department,
        blown_at=whistle.blown_at,
        now=now,
        summons=board,
        counts=counts,
    )


async def ticket_whistles(
    *, session: AsyncSession, ctx: DispatchContext, ticket_id: str, principal: Principal
) -> list[WhistleBoard]:
    """Every whistle blown on a ticket, oldest first, with its board."""
    rows = await session.execute(
        select(col(Whistle.whistle_id))
        .where(col(Whistle.ticket_id) == ticket_id)
        .order_by(col(Whistle.blown_at))
    )
    return [
        await whistle_board(session=session, ctx=ctx, whistle_id=whistle_id, principal=principal)
        for whistle_id in rows.scalars().all()
    ]


async def dry_run(
    *, session: AsyncSession, ctx: DispatchContext, body: DryRunRequest
) -> RoutingDecision:
    """Which rule fires for the posted facts, with the active rules or a candidate file."""
    org = await ctx.org.chart(session)
    if body.rules_text is not None:
        rules = load_rules(body.rules_text, org=org, profiles=ctx.profiles)
    else:
        rules = (await ctx.org.rules(session)).rules
    facts = TicketFacts.model_validate(body.model_dump(exclude={"exclude", "rules_text"}))
    try:
        return route(facts, rules, org, exclude=body.exclude)
    except KeyError as exc:  # an unknown category, area or profile: name it
        message = str(exc) if type(exc) is not KeyError else str(exc.args[0])
        raise Invalid(message) from None


async def escalations(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    principal: Principal,
    target: str | None,
    limit: int,
    offset: int,
) -> list[Escalation]:
    """Escalations, newest first: a centre sees those aimed at it (or in its jurisdiction)."""
    query = select(Escalation)
    role = principal.role
    if role in DEPARTMENT_ROLES:
        query = query.where(col(Escalation.department_code) == principal.department_code)
    elif role is Role.CENTRE:
        org = await ctx.org.chart(session)
        scope = centre_scope(principal, org)
        if scope is not None:
            query = query.where(
                or_(
                    col(Escalation.target_department_code) == scope.code,
                    col(Escalation.department_code) == scope.code,
                )
            )
    elif role not in (Role.OPERATOR, Role.COMMITTEE):
        raise Forbidden(f"role {role} may not read escalations")
    if target is not None:
        query = query.where(col(Escalation.target_department_code) == target)
    rows = await session.execute(
        query.order_by(col(Escalation.escalated_at).desc(), col(Escalation.id).desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars())
