"""What every mediation route shares: the context and role dependencies, path ids, and the
one-transaction write that wakes the relay."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Path
from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation.context import MediationContext
from shared.auth import Principal, Role, require_roles
from shared.runtime import context_of

MAX_OFFSET = 1_000_000
T = TypeVar("T")

MediationDep = Annotated[MediationContext, Depends(context_of(MediationContext))]
# Mediators and the centres that run the one-stop mediation work handle the cases (operators
# always may); the hotline, departments and grid workers may not; the committee reads counts.
CaseWorker = Annotated[Principal, Depends(require_roles(Role.MEDIATOR, Role.CENTRE))]
Centre = Annotated[Principal, Depends(require_roles(Role.CENTRE))]
CountReader = Annotated[
    Principal, Depends(require_roles(Role.COMMITTEE, Role.CENTRE, Role.MEDIATOR))
]
# The board is public; officials (centre and department cadres, mediators) claim from it.
Anyone = Annotated[Principal, Depends(require_roles(*Role))]
Official = Annotated[Principal, Depends(require_roles(Role.CENTRE, Role.DEPARTMENT, Role.MEDIATOR))]

_ID = r"^[\w.:-]+$"
CaseId = Annotated[str, Path(max_length=64, pattern=_ID)]
ItemId = Annotated[str, Path(max_length=72, pattern=_ID)]
MediatorId = Annotated[str, Path(max_length=48, pattern=_ID)]

AUTH_RESPONSES = {
    400: {"description": "A malformed identity header"},
    401: {"description": "No role (header mode), or a unit role without its unit"},
    403: {"description": "The role may not do this, or the case is not the caller's"},
}


async def write(ctx: MediationContext, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction, then wake the relay for the events it wrote."""
    async with ctx.sessions() as session, session.begin():
        result = await work(session)
    ctx.runtime.notify()
    return result


async def read(ctx: MediationContext, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with ctx.sessions() as session:
        return await work(session)
