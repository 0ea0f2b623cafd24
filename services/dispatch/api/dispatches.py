"""Routes: reading dispatches — a department's inbox, the grab pool, one dispatch, a ticket's
dispatches, escalations. What a caller may read is decided per dispatch (``access``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from services.dispatch import queries
from services.dispatch.access import DISPATCH_READERS, QUEUE_READERS
from services.dispatch.api.common import MAX_OFFSET, CallerDep, DispatchId, TicketId, query_text
from services.dispatch.models import Dispatch
from services.dispatch.rules import HandlingLine
from services.dispatch.schemas import DispatchDetail, DispatchPublic, EscalationPublic, InboxPage
from services.dispatch.workflow import Status
from shared.auth import checks_roles

router = APIRouter(tags=["dispatches"])

# How a dispatch came to its department (``dispatches.mode``).
Mode = Literal["assign", "grab", "supervised", "reroute", "transfer", "whistle"]


@router.get("/inbox", response_model=InboxPage, openapi_extra=checks_roles(*QUEUE_READERS))
async def get_inbox(
    caller: CallerDep,
    department: Annotated[str | None, query_text(64)] = None,
    status_: Annotated[list[Status] | None, Query(alias="status")] = None,
    overdue: Annotated[bool | None, Query(description="a running clock past its deadline")] = None,
    line: Annotated[HandlingLine | None, Query()] = None,
    mode: Annotated[Mode | None, Query()] = None,
    ticket_id: Annotated[str | None, query_text(32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> InboxPage:
    """A department's dispatches, most urgent first; filter by status (repeatable), overdue,
    line, mode and ticket; paginate with limit/offset."""
    return await caller.ask(
        queries.inbox,
        department=department,
        statuses=[x.value for x in status_ or ()],
        overdue=overdue,
        line=line.value if line is not None else None,
        mode=mode,
        ticket_id=ticket_id,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/grab-pool", response_model=list[DispatchPublic], openapi_extra=checks_roles(*QUEUE_READERS)
)
async def get_grab_pool(
    caller: CallerDep, department: Annotated[str | None, query_text(64)] = None
) -> list[Dispatch]:
    """Pooled tickets the department may grab (抢着办), soonest-expiring first."""
    return await caller.ask(queries.grab_pool, department=department)


@router.get(
    "/dispatches/{dispatch_id}",
    response_model=DispatchDetail,
    openapi_extra=checks_roles(*DISPATCH_READERS),
)
async def get_dispatch(dispatch_id: DispatchId, caller: CallerDep) -> DispatchDetail:
    """One dispatch with its clocks, allowed actions and audit trail; 403 if it is another
    department's, 404 if there is no such dispatch."""
    return await caller.ask(queries.detail, dispatch_id=dispatch_id)


@router.get(
    "/tickets/{ticket_id}/dispatches",
    response_model=list[DispatchPublic],
    openapi_extra=checks_roles(*DISPATCH_READERS),
)
async def ticket_dispatches(ticket_id: TicketId, caller: CallerDep) -> list[Dispatch]:
    """The dispatches of one ticket the caller may read; 404 when dispatch has not seen it."""
    return await caller.ask(queries.ticket_dispatches, ticket_id=ticket_id)


@router.get(
    "/escalations",
    response_model=list[EscalationPublic],
    openapi_extra=checks_roles(*QUEUE_READERS),
)
async def list_escalations(
    caller: CallerDep,
    target: Annotated[str | None, query_text(64, "escalated to this centre")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Any]:
    """Escalations of missed clocks, newest first."""
    return await caller.ask(queries.escalations, target=target, limit=limit, offset=offset)
