"""Routes: the mediator pool — mediators, availability, declared relations, suggestions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from services.mediation import pool, queries
from services.mediation.api.common import (
    AUTH_RESPONSES,
    MAX_OFFSET,
    CaseWorker,
    Centre,
    MediationDep,
    MediatorId,
    read,
    write,
)
from services.mediation.models import Mediator
from services.mediation.schemas import (
    AvailabilityBody,
    MediatorIn,
    MediatorPublic,
    RelationIn,
)
from shared.auth import Principal, Role
from shared.errors import Forbidden

router = APIRouter(responses=AUTH_RESPONSES)  # type: ignore[arg-type]


@router.get("/mediators", response_model=list[MediatorPublic], tags=["mediators"])
async def list_mediators(
    ctx: MediationDep,
    _principal: CaseWorker,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Mediator]:
    """The mediator pool."""
    return await read(ctx, lambda s: queries.list_mediators(session=s, limit=limit, offset=offset))


@router.post(
    "/mediators",
    response_model=MediatorPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["mediators"],
)
async def add_mediator(ctx: MediationDep, _principal: Centre, body: MediatorIn) -> Mediator:
    """Add a mediator to the pool."""
    return await write(ctx, lambda s: pool.add_mediator(session=s, body=body))


def _self_or_centre(principal: Principal, mediator_id: str) -> None:
    if principal.role is Role.MEDIATOR and principal.subject != mediator_id:
        raise Forbidden(f"mediator {principal.subject} may change only their own entry")


@router.put(
    "/mediators/{mediator_id}/availability", response_model=MediatorPublic, tags=["mediators"]
)
async def set_availability(
    ctx: MediationDep, principal: CaseWorker, mediator_id: MediatorId, body: AvailabilityBody
) -> Mediator:
    """Replace the weekly availability (the mediator themselves or a centre)."""
    _self_or_centre(principal, mediator_id)
    return await write(
        ctx,
        lambda s: pool.set_availability(
            session=s, mediator_id=mediator_id, slots=body.availability
        ),
    )


@router.post(
    "/mediators/{mediator_id}/relations", status_code=status.HTTP_201_CREATED, tags=["mediators"]
)
async def declare_relation(
    ctx: MediationDep, principal: CaseWorker, mediator_id: MediatorId, body: RelationIn
) -> dict[str, Any]:
    """Declare a relation to a person or organisation; it conflicts the mediator out of their
    cases."""
    _self_or_centre(principal, mediator_id)
    row = await write(
        ctx,
        lambda s: pool.declare_relation(
            session=s, mediator_id=mediator_id, body=body, now=ctx.now()
        ),
    )
    return {
        "mediator_id": row.mediator_id,
        "relation": row.relation,
        "declared_at": row.declared_at,
    }
