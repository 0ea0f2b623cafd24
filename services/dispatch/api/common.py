"""What every dispatch route shares: typed dependencies for the context and the caller, one
transaction per request (writes wake the relay), and bounded path and query parameters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.context import DispatchContext
from shared.auth import CurrentPrincipal, Principal, require_roles
from shared.runtime import Runtime, RuntimeDep, context_of

T = TypeVar("T")

# Offsets beyond any real listing; larger ones would overflow the databases' integer parameters.
MAX_OFFSET = 1_000_000

ContextDep = Annotated[DispatchContext, Depends(context_of(DispatchContext))]

# Identifiers and search words from the path or the query string reach SQL: bounded by the
# columns they are compared with and free of control characters (PostgreSQL refuses a NUL in a
# text parameter), so a value that cannot name anything is a 422 naming the parameter.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
DispatchId = Annotated[str, Path(max_length=64, pattern=_PRINTABLE)]
TicketId = Annotated[str, Path(max_length=32, pattern=_PRINTABLE)]
WhistleId = Annotated[str, Path(max_length=64, pattern=_PRINTABLE)]
DepartmentCode = Annotated[str, Path(max_length=64, pattern=_PRINTABLE)]


def query_text(max_length: int, description: str | None = None) -> Any:
    """A printable query-string parameter of bounded length."""
    return Query(max_length=max_length, pattern=_PRINTABLE, description=description)


@dataclass
class Service:
    """The running service for one request: its context, one transaction at a time."""

    runtime: Runtime
    ctx: DispatchContext

    async def write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction, then wake the relay for the events it wrote."""
        async with self.runtime.sessions() as session, session.begin():
            result = await work(session)
        self.runtime.notify()
        return result

    async def read(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in a session that writes nothing."""
        async with self.runtime.sessions() as session:
            return await work(session)


@dataclass
class Caller(Service):
    """The service, and who is calling it."""

    principal: Principal

    async def act(self, operation: Callable[..., Awaitable[T]], **arguments: Any) -> T:
        """Run a service operation as this caller, in one transaction (``write``)."""
        return await self.write(
            lambda s: operation(session=s, ctx=self.ctx, principal=self.principal, **arguments)
        )

    async def ask(self, query: Callable[..., Awaitable[T]], **arguments: Any) -> T:
        """Run a query as this caller (``read``)."""
        return await self.read(
            lambda s: query(session=s, ctx=self.ctx, principal=self.principal, **arguments)
        )

    @property
    def actor(self) -> str:
        """How an admin change records its author: ``role:subject@department``."""
        p = self.principal
        dept = f"@{p.department_code}" if p.department_code else ""
        return f"{p.role.value}:{p.subject}{dept}"


async def _service(runtime: RuntimeDep, ctx: ContextDep) -> Service:
    return Service(runtime, ctx)


async def _caller(runtime: RuntimeDep, ctx: ContextDep, principal: CurrentPrincipal) -> Caller:
    return Caller(runtime, ctx, principal)


async def _operator(
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: Annotated[Principal, Depends(require_roles())],
) -> Caller:
    return Caller(runtime, ctx, principal)


ServiceDep = Annotated[Service, Depends(_service)]
# Any caller: what they may see and do is decided per dispatch (``access``).
CallerDep = Annotated[Caller, Depends(_caller)]
# Operators only: changes to the organisation and the rules.
OperatorDep = Annotated[Caller, Depends(_operator)]
