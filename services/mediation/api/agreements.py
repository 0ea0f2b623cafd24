"""Routes: agreements, court confirmation and follow-up visits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation import agreements, queries
from services.mediation.api.common import (
    AUTH_RESPONSES,
    CaseId,
    CaseWorker,
    ItemId,
    MediationDep,
    read,
    write,
)
from services.mediation.context import MediationContext
from services.mediation.models import Agreement
from services.mediation.schemas import (
    AgreementIn,
    AgreementPublic,
    CourtBody,
    FollowUpIn,
    FollowUpPublic,
    FollowUpRecord,
)
from shared.errors import NotFound

router = APIRouter(responses=AUTH_RESPONSES)  # type: ignore[arg-type]


async def _agreement(ctx: MediationContext, agreement_id: str) -> dict[str, Any]:
    async def work(s: AsyncSession) -> dict[str, Any]:
        row = await s.get(Agreement, agreement_id)
        if row is None:
            raise NotFound(f"no agreement {agreement_id}")
        return await queries.agreement_view(session=s, agreement=row)

    return await read(ctx, work)


@router.post(
    "/cases/{case_id}/agreements",
    response_model=AgreementPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["agreements"],
)
async def record_agreement(
    ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: AgreementIn
) -> dict[str, Any]:
    """Record a written or verbal agreement with its terms; 422 naming every problem."""
    agreement = await write(
        ctx,
        lambda s: agreements.record_agreement(
            session=s, ctx=ctx, principal=principal, case_id=case_id, body=body
        ),
    )
    return await _agreement(ctx, agreement.agreement_id)


@router.post(
    "/agreements/{agreement_id}/court", response_model=AgreementPublic, tags=["agreements"]
)
async def court_confirmation(
    ctx: MediationDep, principal: CaseWorker, agreement_id: ItemId, body: CourtBody
) -> dict[str, Any]:
    """Judicial confirmation (司法确认) requested, granted (with the reference) or refused."""
    await write(
        ctx,
        lambda s: agreements.court_confirmation(
            session=s, ctx=ctx, principal=principal, agreement_id=agreement_id, body=body
        ),
    )
    return await _agreement(ctx, agreement_id)


@router.post(
    "/agreements/{agreement_id}/follow-ups",
    response_model=FollowUpPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["agreements"],
)
async def schedule_follow_up(
    ctx: MediationDep, principal: CaseWorker, agreement_id: ItemId, body: FollowUpIn
) -> Any:
    """Schedule another follow-up visit (回访)."""
    return await write(
        ctx,
        lambda s: agreements.schedule_follow_up(
            session=s, ctx=ctx, principal=principal, agreement_id=agreement_id, body=body
        ),
    )


@router.post(
    "/follow-ups/{follow_up_id}/record", response_model=FollowUpPublic, tags=["agreements"]
)
async def record_follow_up(
    ctx: MediationDep, principal: CaseWorker, follow_up_id: ItemId, body: FollowUpRecord
) -> Any:
    """Record a visit: terms fulfilled (all of them closes the case) or breached."""
    return await write(
        ctx,
        lambda s: agreements.record_follow_up(
            session=s, ctx=ctx, principal=principal, follow_up_id=follow_up_id, body=body
        ),
    )
