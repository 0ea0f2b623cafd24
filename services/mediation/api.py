"""Mediation's HTTP routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.mediation import queries
from services.mediation.context import MediationContext
from services.mediation.models import Case, CasePublic
from shared.auth import Role, require_roles
from shared.runtime import context_of

# Mediators and the centres that run the one-stop mediation work read the cases (operators
# always may); the hotline, departments, grid workers and the committee may not
# (docs/security.md).
CASE_READERS = (Role.MEDIATOR, Role.CENTRE)
MAX_OFFSET = 1_000_000

MediationDep = Annotated[MediationContext, Depends(context_of(MediationContext))]

router = APIRouter(tags=["cases"], dependencies=[Depends(require_roles(*CASE_READERS))])


@router.get(
    "/cases",
    response_model=list[CasePublic],
    responses={
        400: {"description": "A malformed identity header"},
        401: {"description": "No role (header mode), or a unit role without its unit"},
        403: {"description": "The role may not read mediation cases"},
    },
)
async def list_cases(
    ctx: MediationDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Case]:
    """Mediation cases, newest first; paginate with limit/offset."""
    async with ctx.sessions() as session:
        return await queries.list_cases(session=session, limit=limit, offset=offset)
