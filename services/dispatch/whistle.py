"""吹哨报到: the whistle summons several departments to report on a ticket, each within its own
deadline; who may blow it. (A summoned department's report is a one-step action in
``actions.py``; the board is read in ``queries.py``.)"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.access import centre_scope, within
from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.profiles import ClockName
from services.dispatch.deadlines.rows import start_clocks
from services.dispatch.models import Dispatch, TicketRecord, Whistle
from services.dispatch.organisation.chart import Department, OrgChart, UnknownDepartment
from services.dispatch.placement import new_dispatch
from services.dispatch.schemas import SummonSpec
from services.dispatch.transitions import record, step
from services.dispatch.workflow import WORKING, Action, Status
from shared.auth import Principal, Role
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.events.dispatch import Summons, WhistleBlown


def _summoned(
    org: OrgChart, summons: Sequence[SummonSpec], principal: Principal
) -> list[Department]:
    """The departments summoned, each active, none twice and none the blower itself."""
    codes = [s.department_code for s in summons]
    if len(set(codes)) != len(codes):
        raise Invalid("summons: a department is summoned twice")
    units: list[Department] = []
    for index, code in enumerate(codes):
        try:
            units.append(org.department(code))
        except UnknownDepartment:
            raise Invalid(
                f"summons[{index}].department_code: no active department {code!r}"
            ) from None
        if code == principal.department_code:
            raise Invalid(f"summons[{index}].department_code: a department cannot summon itself")
    return units


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
    org = await ctx.org.chart(session)
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
    units = _summoned(org, summons, principal)
    waiting = (
        (
            await session.execute(
                select(col(Dispatch.department_code)).where(
                    col(Dispatch.ticket_id) == ticket_id,
                    col(Dispatch.status) == Status.SUMMONED.value,
                    col(Dispatch.department_code).in_([u.code for u in units]),
                )
            )
        )
        .scalars()
        .all()
    )
    if waiting:
        raise Conflict(
            f"already summoned on this ticket and not yet reported: {sorted(map(str, waiting))}"
        )
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
    default_due = ctx.deadlines.of(ctx.profiles.get("whistle"), now)
    created: list[Dispatch] = []
    parts: list[Summons] = []
    for spec, unit in zip(summons, units, strict=True):
        d = new_dispatch(
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
        start_clocks(session, ctx, d, now, due=due)
        record(
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
                    col(Dispatch.ticket_id) == ticket.ticket_id,
                    col(Dispatch.department_code) == principal.department_code,
                    col(Dispatch.status).in_([s.value for s in WORKING]),
                )
            )
        )
        .scalars()
        .all()
    )
    if source_dispatch_id is not None:
        mine = [d for d in mine if d.dispatch_id == source_dispatch_id]
    if mine:
        s = await step(
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
