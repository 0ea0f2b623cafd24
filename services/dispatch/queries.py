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

from services.dispatch.access import DEPARTMENT_ROLES, authorize_read, centre_scope
from services.dispatch.context import DispatchContext
from services.dispatch.models import (
    Department,
    Dispatch,
    DispatchAction,
    DispatchClock,
    Escalation,
    ExtensionRequest,
    GrabOffer,
    Whistle,
)
from services.dispatch.schemas import (
    ActionPublic,
    BoardRow,
    ClockPublic,
    DispatchDetail,
    DispatchPublic,
    EscalationPublic,
    ExtensionPublic,
    InboxItem,
    InboxPage,
    WhistleBoard,
)
from services.dispatch.service import clocks_of, offers_of
from services.dispatch.workflow import Status, allowed_actions
from shared.auth import Principal, Role
from shared.errors import Forbidden, NotFound

# SQLModel columns typed as plain attributes: mypy cannot see their SQL operators.
D: Any = Dispatch
C: Any = DispatchClock
G: Any = GrabOffer
M: Any = Department
A: Any = DispatchAction
X: Any = ExtensionRequest
E: Any = Escalation
W: Any = Whistle


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
    org = await ctx.organisation(session)
    offered = await offers_of(session, dispatch_id)
    authorize_read(principal, d, org, offered=offered)
    now = ctx.now()
    clocks = await clocks_of(session, dispatch_id)
    actions = (
        await session.execute(
            select(DispatchAction).where(A.dispatch_id == dispatch_id).order_by(A.id)
        )
    ).scalars()
    extensions = (
        await session.execute(
            select(ExtensionRequest).where(X.dispatch_id == dispatch_id).order_by(X.id)
        )
    ).scalars()
    escalations = (
        await session.execute(select(Escalation).where(E.dispatch_id == dispatch_id).order_by(E.id))
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
                .where(D.ticket_id == ticket_id)
                .order_by(D.assigned_at, D.dispatch_id)
            )
        )
        .scalars()
        .all()
    )
    if not rows:
        raise NotFound(f"no dispatch for ticket {ticket_id!r}")
    org = await ctx.organisation(session)
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
    org = await ctx.organisation(session)
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
        query = query.where(D.department_code == department)
    if statuses:
        query = query.where(D.status.in_(list(statuses)))
    if line is not None:
        query = query.where(D.handling_line == line)
    if mode is not None:
        query = query.where(D.mode == mode)
    if ticket_id is not None:
        query = query.where(D.ticket_id == ticket_id)
    now = ctx.now()
    running_late = exists().where(
        C.dispatch_id == D.dispatch_id, C.stopped_at.is_(None), C.due_at < now
    )
    if overdue is True:
        query = query.where(running_late)
    elif overdue is False:
        query = query.where(~running_late)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    next_due = (
        select(func.min(C.due_at))
        .where(C.dispatch_id == D.dispatch_id, C.stopped_at.is_(None))
        .correlate(Dispatch)
        .scalar_subquery()
    )
    page = (
        await session.execute(
            query.add_columns(next_due.label("next_due"))
            .order_by(next_due.is_(None), next_due, D.assigned_at.desc(), D.dispatch_id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    ids = [row[0].dispatch_id for row in page]
    late: dict[str, list[str]] = {}
    if ids:
        for dispatch_id, clock in (
            await session.execute(
                select(C.dispatch_id, C.clock).where(
                    C.dispatch_id.in_(ids), C.stopped_at.is_(None), C.due_at < now
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
    query = select(Dispatch).where(D.status == Status.PENDING_GRAB.value)
    if department is not None:
        query = query.where(
            exists().where(G.dispatch_id == D.dispatch_id, G.department_code == department)
        )
    rows = await session.execute(query.order_by(D.grab_until, D.dispatch_id).limit(200))
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
            select(Dispatch, DispatchClock, M.name_zh)
            .join(DispatchClock, and_(C.dispatch_id == D.dispatch_id, C.clock == "report"))
            .outerjoin(Department, M.code == D.department_code)
            .where(D.whistle_id == whistle_id)
            .order_by(C.due_at, D.department_code)
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


async def whistles_of_ticket(*, session: AsyncSession, ticket_id: str) -> list[Whistle]:
    """The whistles blown on a ticket, oldest first."""
    rows = await session.execute(
        select(Whistle).where(W.ticket_id == ticket_id).order_by(W.blown_at)
    )
    return list(rows.scalars())


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
        query = query.where(E.department_code == principal.department_code)
    elif role is Role.CENTRE:
        org = await ctx.organisation(session)
        scope = centre_scope(principal, org)
        if scope is not None:
            query = query.where(
                or_(E.target_department_code == scope.code, E.department_code == scope.code)
            )
    elif role not in (Role.OPERATOR, Role.COMMITTEE):
        raise Forbidden(f"role {role} may not read escalations")
    if target is not None:
        query = query.where(E.target_department_code == target)
    rows = await session.execute(
        query.order_by(E.escalated_at.desc(), E.id.desc()).limit(limit).offset(offset)
    )
    return list(rows.scalars())
