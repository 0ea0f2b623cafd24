"""Routes: cases — the caller's cases, walk-ins, parties, assignment, the committee's counts,
and the simple moves (withdraw, escalate, close)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation import moves, parties, pool, queries, service
from services.mediation.api.common import (
    AUTH_RESPONSES,
    MAX_OFFSET,
    CaseId,
    CaseWorker,
    Centre,
    CountReader,
    MediationDep,
    read,
    write,
)
from services.mediation.lifecycle import Status
from services.mediation.models import Case
from services.mediation.schemas import (
    AssignBody,
    CaseDetail,
    CasePublic,
    CaseStats,
    FailBody,
    PartyIn,
    PartyPublic,
    ReasonBody,
    Suggestion,
    WalkInCase,
)
from shared.auth import Role
from shared.events.mediation import Level

router = APIRouter(responses=AUTH_RESPONSES)  # type: ignore[arg-type]


@router.get("/cases", response_model=list[CasePublic], tags=["cases"])
async def list_cases(
    ctx: MediationDep,
    principal: CaseWorker,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[Status | None, Query()] = None,
    level: Annotated[Level | None, Query()] = None,
) -> list[Case]:
    """The caller's cases (a mediator's own, a centre's level and area), newest first."""
    return await read(
        ctx,
        lambda s: queries.list_cases(
            session=s,
            principal=principal,
            limit=limit,
            offset=offset,
            status=status.value if status else None,
            level=level,
        ),
    )


@router.post(
    "/cases", response_model=CasePublic, status_code=status.HTTP_201_CREATED, tags=["cases"]
)
async def open_walk_in(ctx: MediationDep, principal: CaseWorker, body: WalkInCase) -> Case:
    """Open a walk-in case (no ticket); a mediator opening it becomes its lead mediator."""
    return await write(
        ctx, lambda s: parties.open_walk_in(session=s, ctx=ctx, principal=principal, body=body)
    )


@router.get("/cases/stats", response_model=CaseStats, tags=["cases"])
async def case_stats(ctx: MediationDep, principal: CountReader) -> CaseStats:
    """Counts by status, level, dispute type, ending level and agreement kind — no parties."""
    return await read(ctx, lambda s: queries.case_stats(session=s, principal=principal))


@router.get("/cases/{case_id}", response_model=CaseDetail, tags=["cases"])
async def get_case(ctx: MediationDep, principal: CaseWorker, case_id: CaseId) -> dict[str, Any]:
    """One case with parties (clear to its mediators only), sessions, agreements and history."""
    return await read(
        ctx, lambda s: queries.case_detail(session=s, principal=principal, case_id=case_id)
    )


@router.post(
    "/cases/{case_id}/parties",
    response_model=PartyPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["cases"],
)
async def add_party(
    ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: PartyIn
) -> PartyPublic:
    """Add an applicant, respondent or third party; 409 if a mediator on the case conflicts."""
    party = await write(
        ctx,
        lambda s: parties.add_party(
            session=s, ctx=ctx, principal=principal, case_id=case_id, body=body
        ),
    )
    return queries._party_view(party, clear=principal.role is Role.MEDIATOR)


@router.get("/cases/{case_id}/suggestions", response_model=list[Suggestion], tags=["mediators"])
async def suggestions(
    ctx: MediationDep,
    principal: Centre,
    case_id: CaseId,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[Suggestion]:
    """Mediators ranked for the case (speciality, level, load); conflicted ones last, named."""

    async def work(s: AsyncSession) -> list[Suggestion]:
        case = await service.load_case(session=s, principal=principal, case_id=case_id, lock=False)
        return await pool.suggestions(session=s, case=case, limit=limit)

    return await read(ctx, work)


@router.post("/cases/{case_id}/assign", response_model=CaseDetail, tags=["cases"])
async def assign(
    ctx: MediationDep, principal: Centre, case_id: CaseId, body: AssignBody
) -> dict[str, Any]:
    """Assign a mediator; 409 naming the conflict of interest when there is one."""

    async def work(s: AsyncSession) -> None:
        case = await service.load_case(session=s, principal=principal, case_id=case_id)
        await parties.assign(
            session=s,
            ctx=ctx,
            principal=principal,
            case=case,
            mediator_id=body.mediator_id,
            lead=body.lead,
        )

    await write(ctx, work)
    return await read(
        ctx, lambda s: queries.case_detail(session=s, principal=principal, case_id=case_id)
    )


@router.post("/cases/{case_id}/fail", response_model=CasePublic, tags=["cases"])
async def fail(ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: FailBody) -> Case:
    """Mediation did not settle it: the case goes up a level, or out with a referral."""
    return await write(
        ctx,
        lambda s: moves.fail(session=s, ctx=ctx, principal=principal, case_id=case_id, body=body),
    )


# Registered last: the literal routes under /cases/{case_id}/ must match first.
@router.post("/cases/{case_id}/{action}", response_model=CasePublic, tags=["cases"])
async def case_action(
    ctx: MediationDep,
    principal: CaseWorker,
    case_id: CaseId,
    action: Literal["withdraw", "escalate", "close"],
    body: ReasonBody | None = None,
) -> Case:
    """Withdraw (and close), hand up a level (centres), or close a concluded case."""
    reason = body.reason if body else None
    return await write(
        ctx,
        lambda s: moves.simple_action(
            session=s, ctx=ctx, principal=principal, case_id=case_id, action=action, reason=reason
        ),
    )
