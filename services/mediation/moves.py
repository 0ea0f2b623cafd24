"""A case's lifecycle moves beyond agreements: failure, referral, escalation between levels,
closing, and the simple moves a route names (withdraw, escalate, close)."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation.context import MediationContext
from services.mediation.lifecycle import (
    LEVELS,
    Action,
)
from services.mediation.models import Agreement, Case, CaseMediator
from services.mediation.schemas import FailBody
from services.mediation.service import (
    actor_of,
    dispute_type_of,
    level_of,
    load_case,
    transition,
)
from shared.auth import Principal, Role
from shared.errors import Forbidden, NotFound
from shared.events.mediation import (
    AgreementKind,
    CaseClosed,
    CaseEscalated,
    CaseReferred,
    MediationFailed,
    Referral,
)


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
            dispute_type=dispute_type_of(case),
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
