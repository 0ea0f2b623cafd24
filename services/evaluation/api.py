"""Evaluation's HTTP routes: metrics for the city committee."""

from __future__ import annotations

from fastapi import APIRouter

from services.evaluation import service
from services.evaluation.models import Summary
from shared.runtime import RuntimeDep

router = APIRouter(tags=["metrics"])


@router.get("/summary", response_model=Summary)
async def get_summary(runtime: RuntimeDep) -> Summary:
    """Tickets received, dispatched and called back, as projected from the event stream."""
    async with runtime.sessions() as session:
        return await service.summary(session=session)
