"""Routes: mediation sessions — booking without double-booking, attendance and outcome."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from services.mediation import sessions
from services.mediation.api.common import (
    AUTH_RESPONSES,
    CaseId,
    CaseWorker,
    ItemId,
    MediationDep,
    write,
)
from services.mediation.schemas import (
    SessionIn,
    SessionPublic,
    SessionRecord,
)

router = APIRouter(responses=AUTH_RESPONSES)  # type: ignore[arg-type]


@router.post(
    "/cases/{case_id}/sessions",
    response_model=SessionPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["sessions"],
)
async def schedule_session(
    ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: SessionIn
) -> Any:
    """Schedule a session; 409 naming the other session if the mediator or room is booked."""
    return await write(
        ctx,
        lambda s: sessions.schedule(
            session=s, ctx=ctx, principal=principal, case_id=case_id, body=body
        ),
    )


@router.post("/sessions/{session_id}/record", response_model=SessionPublic, tags=["sessions"])
async def record_session(
    ctx: MediationDep, principal: CaseWorker, session_id: ItemId, body: SessionRecord
) -> Any:
    """Record attendance, notes and the outcome of a held session."""
    return await write(
        ctx,
        lambda s: sessions.record(
            session=s, ctx=ctx, principal=principal, session_id=session_id, body=body
        ),
    )


@router.post("/sessions/{session_id}/cancel", response_model=SessionPublic, tags=["sessions"])
async def cancel_session(ctx: MediationDep, principal: CaseWorker, session_id: ItemId) -> Any:
    """Cancel a scheduled session; its mediator and room are free again."""
    return await write(
        ctx, lambda s: sessions.cancel(session=s, principal=principal, session_id=session_id)
    )
