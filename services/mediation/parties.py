"""A case's parties (masked outside the case's mediators), the assignment of its mediators with
the conflict-of-interest checks, and walk-in cases, which arrive with their parties."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation import pool
from services.mediation.access import unit_scope
from services.mediation.context import MediationContext
from services.mediation.lifecycle import (
    MEDIATING,
    Action,
    IllegalTransition,
    Status,
)
from services.mediation.models import Case, CaseMediator, Party
from services.mediation.schemas import PartyIn, WalkInCase
from services.mediation.service import (
    LEVEL_DIGITS,
    actor_of,
    area_at_level,
    level_of,
    load_case,
    mediator_ids,
    new_case,
    opened_event,
)
from shared.auth import Principal, Role
from shared.errors import Conflict, Forbidden, Invalid
from shared.events.mediation import (
    CaseAssigned,
)
from shared.geo import UnknownArea, area
from shared.pii import mask_id_number, mask_name, mask_phone, normalize_phone


def _party(case_id: str, body: PartyIn, number: int) -> Party:
    if body.phone is not None and not normalize_phone(body.phone):
        raise Invalid(f"party {body.name[:1]}*: phone holds no digits", field="phone")
    return Party(
        party_id=f"{case_id}-P{number:02d}",
        case_id=case_id,
        role=body.role,
        kind=body.kind,
        name=body.name,
        name_masked=body.name if body.kind == "organisation" else (mask_name(body.name) or "*"),
        phone=body.phone,
        phone_masked=mask_phone(body.phone),
        id_number=body.id_number,
        id_number_masked=mask_id_number(body.id_number),
        address=body.address,
        identity_key=pool.identity_key(
            kind=body.kind, name=body.name, phone=body.phone, id_number=body.id_number
        ),
    )


async def add_party(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    case_id: str,
    body: PartyIn,
) -> Party:
    """Add a party to an open case; refused (409) when a mediator on the case has a conflict of
    interest with them."""
    case = await load_case(session=session, principal=principal, case_id=case_id)
    if Status(case.status) not in MEDIATING:
        raise IllegalTransition(
            Status(case.status),
            Action.START,
            f"cannot add a party to a case that is {case.status}",
        )
    party = _party(case_id, body, len(await case_parties(session=session, case_id=case_id)) + 1)
    for mediator_id in await mediator_ids(session, case_id):
        conflict = await pool.conflict_of_interest(
            session=session, mediator_id=mediator_id, case_id=case_id, parties=[party]
        )
        if conflict is not None:
            ctx.refused("conflict_of_interest")
            raise Conflict(conflict, current=case.status)
    session.add(party)
    await session.flush()
    return party


# --------------------------------------------------------------------------------------------
# Assignment


async def assign(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    case: Case,
    mediator_id: str,
    lead: bool,
) -> CaseMediator:
    """Put a mediator on the case; 409 naming the conflict when they have one, 422 for a
    mediator not in the pool."""
    if Status(case.status) not in MEDIATING | {Status.BREACHED}:
        raise IllegalTransition(
            Status(case.status),
            Action.START,
            f"cannot assign a mediator to a case that is {case.status}",
        )
    mediator = await pool.get_mediator(session=session, mediator_id=mediator_id)
    if mediator is None or not mediator.active:
        raise Invalid(f"no active mediator {mediator_id} in the pool", field="mediator_id")
    parties = await case_parties(session=session, case_id=case.case_id)
    conflict = await pool.conflict_of_interest(
        session=session, mediator_id=mediator_id, case_id=case.case_id, parties=parties
    )
    if conflict is not None:
        ctx.refused("conflict_of_interest")
        raise Conflict(conflict, current=case.status)
    current = (
        (
            await session.execute(
                select(CaseMediator).where(col(CaseMediator.case_id) == case.case_id)
            )
        )
        .scalars()
        .all()
    )
    if any(m.mediator_id == mediator_id for m in current):
        raise Conflict(f"mediator {mediator_id} is already on case {case.case_id}")
    if lead:
        for other in current:
            other.lead = False
    row = CaseMediator(
        case_id=case.case_id,
        mediator_id=mediator_id,
        lead=lead or not current,
        assigned_at=ctx.now(),
        assigned_by=actor_of(principal),
    )
    session.add(row)
    await session.flush()
    await ctx.outbox.add(
        session,
        CaseAssigned(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            mediator_id=mediator_id,
            lead=row.lead,
            level=level_of(case),
            occurred_at=ctx.now(),
        ),
    )
    return row


async def case_parties(*, session: AsyncSession, case_id: str) -> list[Party]:
    """A case's parties, in the order they were added."""
    rows = await session.execute(
        select(Party).where(col(Party.case_id) == case_id).order_by(col(Party.party_id))
    )
    return list(rows.scalars())


async def open_walk_in(
    *, session: AsyncSession, ctx: MediationContext, principal: Principal, body: WalkInCase
) -> Case:
    """Open a case for someone who walked into a centre or a village room (no ticket); a
    mediator who opens it becomes its lead mediator."""
    if principal.role is Role.CENTRE and principal.department_code is not None:
        scope = unit_scope(principal.department_code)
        if scope is None or scope.level != body.level:
            raise Forbidden(f"centre {principal.department_code} opens cases at its own level only")
        if scope.area_code is not None and not body.area_code.startswith(scope.area_code):
            raise Forbidden(f"area {body.area_code} is outside centre {principal.department_code}")
    try:
        area(body.area_code)
    except UnknownArea:
        raise Invalid(f"unknown area code {body.area_code}", field="area_code") from None
    digits = LEVEL_DIGITS[body.level]
    if digits is not None and len(body.area_code) < digits:
        raise Invalid(
            f"area {body.area_code} is above the {body.level} level; name the {body.level} "
            "or an area inside it",
            field="area_code",
        )
    centre_area = area_at_level(body.area_code, body.level)
    case = new_case(
        ctx,
        case_id=f"MW-{uuid.uuid4().hex[:12].upper()}",
        category_code=body.category_code,
        dispute_type=body.dispute_type,
        level=body.level,
        area_code=body.area_code,
        centre_area_code=centre_area,
        unit_code=principal.department_code if principal.role is Role.CENTRE else None,
        origin="walk_in",
        summary=body.summary,
        opened_by=actor_of(principal),
    )
    session.add(case)
    await session.flush()
    for number, party in enumerate(body.parties, start=1):
        session.add(_party(case.case_id, party, number))
    await session.flush()
    await ctx.outbox.add(session, opened_event(ctx, case))
    if principal.role is Role.MEDIATOR:
        await assign(
            session=session,
            ctx=ctx,
            principal=principal,
            case=case,
            mediator_id=principal.subject,
            lead=True,
        )
    return case
