"""Mediation's case operations: opening (from dispatch or a walk-in), parties, assignment, and
the lifecycle moves that are not about sessions or agreements (fail, withdraw, escalate, close).

Every move goes through ``transition``: the pure ``lifecycle.apply`` decides, this module stores
the new state with an audit row, and the caller writes the events through the outbox in the
same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation.access import check_sees, level_of_tier, unit_scope
from services.mediation.context import MediationContext
from services.mediation.lifecycle import (
    Action,
    CaseState,
    Status,
    apply,
    as_level,
)
from services.mediation.models import Case, CaseMediator, CaseTransition
from shared.auth import Principal
from shared.errors import NotFound
from shared.events.dispatch import MediationRequested, TicketAssigned
from shared.events.mediation import (
    CaseOpened,
    DisputeType,
    Level,
)

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
LEVEL_DIGITS: dict[Level, int | None] = {"village": 12, "town": 9, "district": 6, "city": None}
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
    digits = LEVEL_DIGITS[level]
    if area_code is None or digits is None or len(area_code) < digits:
        return None if digits is None else area_code
    return area_code[:digits]


def level_deadline(ctx: MediationContext, level: Level, since: datetime) -> datetime:
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
        case.due_at = level_deadline(ctx, after.level, now)
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
    case = new_case(
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
    await ctx.outbox.add(session, opened_event(ctx, case))
    return case


def new_case(ctx: MediationContext, **fields: Any) -> Case:
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
        due_at=level_deadline(ctx, level, now),
        board_due_at=ctx.working_days_from(now, ctx.settings.board_open_working_days),
        updated_at=now,
    )


def opened_event(ctx: MediationContext, case: Case) -> CaseOpened:
    return CaseOpened(
        case_id=case.case_id,
        ticket_id=case.ticket_id,
        category_code=case.category_code,
        dispute_type=dispute_type_of(case),
        level=level_of(case),
        area_code=case.area_code,
        origin="walk_in" if case.origin == "walk_in" else "dispatch",
        occurred_at=ctx.now(),
    )


def dispute_type_of(case: Case) -> DisputeType:
    return next((t for t in _DISPUTE_TYPES.values() if t == case.dispute_type), "other")


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
