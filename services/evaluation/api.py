"""Evaluation's HTTP routes: metrics for the city committee."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from services.evaluation import service
from services.evaluation.context import EvaluationContext
from services.evaluation.models import Summary
from shared.auth import Role, require_roles
from shared.runtime import context_of

# The committee and its supervision office read the metrics (operators always may); the
# hotline, departments and the other roles may not (docs/security.md).
METRICS_READERS = (Role.COMMITTEE,)

EvaluationDep = Annotated[EvaluationContext, Depends(context_of(EvaluationContext))]

router = APIRouter(tags=["metrics"], dependencies=[Depends(require_roles(*METRICS_READERS))])


@router.get(
    "/summary",
    response_model=Summary,
    responses={
        400: {"description": "A malformed identity header"},
        401: {"description": "No role (header mode), or a unit role without its unit"},
        403: {"description": "The role may not read the metrics"},
    },
)
async def get_summary(ctx: EvaluationDep) -> Summary:
    """Tickets received, dispatched, awaiting dispatch and called back, from the event stream."""
    async with ctx.sessions() as session:
        return await service.summary(session=session)
