"""Mediation's case operations: opening (from dispatch or a walk-in), parties, assignment, and
the lifecycle moves that are not about sessions or agreements (fail, withdraw, escalate, close).

Every move goes through ``transition``: the pure ``lifecycle.apply`` decides, this module stores
the new state with an audit row, and the caller writes the events through the outbox in the
same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation import pool
from services.mediation.access import check_sees, level_of_tier, unit_scope
from services.mediation.context import MediationContext
from services.mediation.lifecycle import (
    LEVELS,
    MEDIATING,
    Action,
    CaseState,
    IllegalTransition,
    Status,
    apply,
    as_level,
)
from services.mediation.models import Agreement, Case, CaseMediator, CaseTransition, Party
from services.mediation.schemas import FailBody, PartyIn, WalkInCase
from shared.auth import Principal, Role
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.events.dispatch import MediationRequested, TicketAssigned
from shared.events.mediation import (
    AgreementKind,
    CaseAssigned,
    CaseClosed,
    CaseEscalated,
    CaseOpened,
    CaseReferred,
    DisputeType,
    Level,
    MediationFailed,
    Referral,
)
from shared.geo import UnknownArea, area
from shared.pii import mask_id_number, mask_name, mask_phone, normalize_phone

# The taxonomy's dispute leaves (13xx) and the dispute types they are.
_DISPUTE_TYPES: dict[str, DisputeType] = {
    "1301": "neighbour",
    "1302": "family",
    "1303": "contract_debt",
    "1304": "land",
    "1305": "labour",
    "1306": "traffic",
}
# How many digits of an area code name the area at each level (codes extend their parent's).
_LEVEL_DIGITS: dict[Level, int | None] = {"village": 12, "town": 9, "district": 6, "city": None}
SYSTEM = "system:mediation"


def actor_of(principal: Principal) -> str:
    """``role:subject@unit`` for audit rows."""
    unit = f"@{principal.department_code}" if principal.department_code else ""
    return f"{principal.role.value}:{principal.subject}{unit}"


def state_of(case: Case) -> CaseState:
    """The lifecycle state stored on a case row."""
    return CaseState(
        status=Status(case.status),
        level=as_level(case.level),
        breaches=case.breaches,
        escalations=case.escalations,
    )


def level_of(case: Case) -> Level:
    """The case's level, typed."""
    return state_of(case).level


def area_at_level(area_code: str | None, level: Level) -> str | None:
    """The area of the centre at ``level`` over a dispute's area (None: the whole city)."""
    digits = _LEVEL_DIGITS[level]
    if area_code is None or digits is None or len(area_code) < digits:
        return None if digits is None else area_code
    return area_code[:digits]


def _level_deadline(ctx: MediationContext, level: Level, since: datetime) -> datetime:
    return ctx.working_days_from(since, ctx.settings.level_time_limits[level])


async def transition(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    case: Case,
    action: Action,
    actor: str,
    note: str = "",
) -> CaseState:
    """Apply one lifecycle action to the case row and audit it; IllegalTransition (409) if the
    case's status forbids it."""
    before = state_of(case)
    after = apply(before, action)
    now = ctx.now()
    case.status = after.status.value
    case.breaches = after.breaches
    case.escalations = after.escalations
    case.updated_at = now
    if after.level != before.level:
        case.level = after.level
        case.centre_area_code = area_at_level(case.area_code, after.level)
        case.level_since = now
        case.due_at = _level_deadline(ctx, after.level, now)
    if after.status is Status.CLOSED:
        case.outcome = after.outcome
        case.ended_level = case.level
        case.closed_at = now
    session.add(
        CaseTransition(
            case_id=case.case_id,
            action=action.value,
            from_status=before.status.value,
            to_status=after.status.value,
            actor=actor,
            note=note,
            at=now,
        )
    )
    return after


# --------------------------------------------------------------------------------------------
# Opening


async def open_case_for_dispatch(
    *, session: AsyncSession, ctx: MediationContext, event: TicketAssigned
) -> Case | None:
    """Open a case when dispatch sends a ticket down the mediation line (once per ticket)."""
    if event.handling_line != "mediation":
        return None
    return await _open_case(
        session=session,
        ctx=ctx,
        ticket_id=event.ticket_id,
        category_code=event.category_code,
        area_code=event.area_code,
        unit_code=event.department_code,
        level=level_of_tier(event.department_tier),
    )


async def open_case_for_request(
    *, session: AsyncSession, ctx: MediationContext, event: MediationRequested
) -> Case:
    """Open a case when dispatch asks for mediation (routing or the handling department)."""
    scope = unit_scope(event.department_code)
    return await _open_case(
        session=session,
        ctx=ctx,
        ticket_id=event.ticket_id,
        category_code=event.category_code,
        area_code=event.area_code,
        unit_code=event.department_code,
        level=scope.level if scope else "town",
    )


async def _open_case(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    ticket_id: str,
    category_code: str | None,
    area_code: str | None,
    unit_code: str | None,
    level: Level,
) -> Case:
    """The ticket's case, opened (with ``CaseOpened``) if it has none yet: one case per ticket."""
    existing = (
        (await session.execute(select(Case).where(col(Case.ticket_id) == ticket_id)))
        .scalars()
        .first()
    )
    if existing is not None:
        return existing
    scope = unit_scope(unit_code) if unit_code else None
    case = _new_case(
        ctx,
        case_id=f"M-{ticket_id}",
        ticket_id=ticket_id,
        category_code=category_code,
        dispute_type=_DISPUTE_TYPES.get(category_code or "", "other"),
        level=level,
        area_code=area_code,
        centre_area_code=scope.area_code if scope else area_at_level(area_code, level),
        unit_code=unit_code,
        origin="dispatch",
    )
    session.add(case)
    await session.flush()
    await ctx.outbox.add(session, _opened(ctx, case))
    return case


def _new_case(ctx: MediationContext, **fields: Any) -> Case:
    now = ctx.now()
    level: Level = fields["level"]
    return Case(
        case_id=fields["case_id"],
        ticket_id=fields.get("ticket_id"),
        category_code=fields.get("category_code"),
        status=Status.ACCEPTED.value,
        opened_at=now,
        origin=fields["origin"],
        dispute_type=fields["dispute_type"],
        level=level,
        area_code=fields.get("area_code"),
        centre_area_code=fields.get("centre_area_code"),
        centre_code=fields.get("unit_code"),
        summary=fields.get("summary", ""),
        opened_by=fields.get("opened_by"),
        level_since=now,
        due_at=_level_deadline(ctx, level, now),
        board_due_at=ctx.working_days_from(now, ctx.settings.board_open_working_days),
        updated_at=now,
    )


def _opened(ctx: MediationContext, case: Case) -> CaseOpened:
    return CaseOpened(
        case_id=case.case_id,
        ticket_id=case.ticket_id,
        category_code=case.category_code,
        dispute_type=_dispute_type(case),
        level=level_of(case),
        area_code=case.area_code,
        origin="walk_in" if case.origin == "walk_in" else "dispatch",
        occurred_at=ctx.now(),
    )


def _dispute_type(case: Case) -> DisputeType:
    return next((t for t in _DISPUTE_TYPES.values() if t == case.dispute_type), "other")


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
    digits = _LEVEL_DIGITS[body.level]
    if digits is not None and len(body.area_code) < digits:
        raise Invalid(
            f"area {body.area_code} is above the {body.level} level; name the {body.level} "
            "or an area inside it",
            field="area_code",
        )
    centre_area = area_at_level(body.area_code, body.level)
    case = _new_case(
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
    await ctx.outbox.add(session, _opened(ctx, case))
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


# --------------------------------------------------------------------------------------------
# Loading with access


async def mediator_ids(session: AsyncSession, case_id: str) -> list[str]:
    """The mediators currently on a case."""
    rows = await session.execute(
        select(col(CaseMediator.mediator_id)).where(col(CaseMediator.case_id) == case_id)
    )
    return list(rows.scalars())


async def load_case(
    *, session: AsyncSession, principal: Principal, case_id: str, lock: bool = True
) -> Case:
    """The case, locked for update, when the principal may act on it (404 / 403 otherwise)."""
    query = select(Case).where(col(Case.case_id) == case_id)
    if lock:
        query = query.with_for_update()
    case = (await session.execute(query)).scalars().first()
    if case is None:
        raise NotFound(f"no case {case_id}")
    check_sees(principal, case, await mediator_ids(session, case_id))
    return case


# --------------------------------------------------------------------------------------------
# Parties


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


# --------------------------------------------------------------------------------------------
# Lifecycle moves


async def fail(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    case_id: str,
    body: FailBody,
) -> Case:
    """Mediation at this level did not settle the dispute. With no referral and a level above
    that still mediates, the case goes up (小事不出村、大事不出镇); otherwise it leaves mediation
    with ``MediationFailed`` (and, with a referral, is referred and closed)."""
    case = await load_case(session=session, principal=principal, case_id=case_id)
    actor = actor_of(principal)
    level = level_of(case)
    limit = LEVELS.index(ctx.settings.escalate_failed_below)
    if body.referral == "none" and LEVELS.index(level) < limit:
        await transition(
            session=session, ctx=ctx, case=case, action=Action.FAIL, actor=actor, note=body.reason
        )
        await escalate(
            session=session, ctx=ctx, case=case, reason="failed", actor=actor, note=body.reason
        )
        return case
    await transition(
        session=session, ctx=ctx, case=case, action=Action.FAIL, actor=actor, note=body.reason
    )
    await ctx.outbox.add(
        session,
        MediationFailed(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            reason=body.reason,
            referral=body.referral,
            level=level,
            area_code=case.area_code,
            occurred_at=ctx.now(),
        ),
    )
    if body.referral != "none":
        await refer(
            session=session,
            ctx=ctx,
            case=case,
            referral=body.referral,
            reason=body.reason,
            actor=actor,
        )
    return case


async def refer(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    case: Case,
    referral: Referral,
    reason: str,
    actor: str,
) -> None:
    """The case leaves mediation for litigation, arbitration, legal aid or an authority."""
    await transition(
        session=session, ctx=ctx, case=case, action=Action.REFER, actor=actor, note=reason
    )
    await ctx.outbox.add(
        session,
        CaseReferred(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            referral=referral,
            reason=reason,
            level=level_of(case),
            occurred_at=ctx.now(),
        ),
    )
    await close(session=session, ctx=ctx, case=case, actor=actor)


EscalationReason = Literal["failed", "overdue", "requested"]


async def escalate(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    case: Case,
    reason: EscalationReason,
    actor: str,
    note: str = "",
) -> None:
    """Hand the case to the centre one level up; its mediators there are assigned anew."""
    before = level_of(case)
    after = await transition(
        session=session,
        ctx=ctx,
        case=case,
        action=Action.ESCALATE,
        actor=actor,
        note=note or reason,
    )
    for row in (
        await session.execute(select(CaseMediator).where(col(CaseMediator.case_id) == case.case_id))
    ).scalars():
        await session.delete(row)
    await ctx.outbox.add(
        session,
        CaseEscalated(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            from_level=before,
            to_level=after.level,
            reason=reason,
            area_code=case.area_code,
            occurred_at=ctx.now(),
        ),
    )


async def close(*, session: AsyncSession, ctx: MediationContext, case: Case, actor: str) -> None:
    """Close the case, recording how and at which level it ended."""
    after = await transition(session=session, ctx=ctx, case=case, action=Action.CLOSE, actor=actor)
    await ctx.outbox.add(
        session,
        CaseClosed(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            outcome=after.outcome or "failed",
            level=level_of(case),
            area_code=case.area_code,
            dispute_type=_dispute_type(case),
            category_code=case.category_code,
            agreement_kind=await latest_agreement_kind(session=session, case_id=case.case_id),
            occurred_at=ctx.now(),
        ),
    )


async def latest_agreement_kind(*, session: AsyncSession, case_id: str) -> AgreementKind | None:
    """The kind of the case's latest agreement, if it has one."""
    kind = (
        await session.execute(
            select(col(Agreement.kind))
            .where(col(Agreement.case_id) == case_id)
            .order_by(col(Agreement.recorded_at).desc())
            .limit(1)
        )
    ).scalar()
    return "written" if kind == "written" else "verbal" if kind == "verbal" else None


async def simple_action(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    case_id: str,
    action: str,
    reason: str | None,
) -> Case:
    """The moves that take only a reason: withdraw (and close), escalate on request, close."""
    case = await load_case(session=session, principal=principal, case_id=case_id)
    actor = actor_of(principal)
    match action:
        case "withdraw":
            await transition(
                session=session,
                ctx=ctx,
                case=case,
                action=Action.WITHDRAW,
                actor=actor,
                note=reason or "",
            )
            await close(session=session, ctx=ctx, case=case, actor=actor)
        case "escalate":
            if principal.role is Role.MEDIATOR:
                raise Forbidden("a centre decides to hand a case up, not its mediator")
            await escalate(
                session=session,
                ctx=ctx,
                case=case,
                reason="requested",
                actor=actor,
                note=reason or "",
            )
        case "close":
            await close(session=session, ctx=ctx, case=case, actor=actor)
        case _:
            raise NotFound(f"no case action {action!r}")
    return case
