"""Intake's HTTP routes: thin — validate, call the service, map errors."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from services.intake import service
from services.intake.models import TicketAccepted, TicketIn, TicketPublic
from shared.fastjson import body_openapi, json_response, parse_body
from shared.runtime import RuntimeDep

router = APIRouter(tags=["tickets"])


@router.post(
    "/tickets",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketAccepted,
    responses={
        200: {"model": TicketAccepted, "description": "Already accepted (same channel id)"},
        422: {"description": "The body is not JSON or a field is invalid; the detail names it"},
    },
    openapi_extra=body_openapi(TicketIn),
)
async def post_ticket(request: Request) -> Response:
    """Accept one ticket; answered only after it is durably stored with its event."""
    # The hottest route reads the runtime directly: a dependency costs ~10 % of its CPU.
    runtime = request.app.state.runtime
    ticket = await parse_body(request, TicketIn)
    accepted = await service.accept_ticket(
        ticket=ticket,
        engine=runtime.engine,
        committer=runtime.committer,  # type: ignore[arg-type]
        outbox=runtime.outbox,
        ids=runtime.extras["ids"],
        salt=runtime.settings.citizen_hash_salt,  # type: ignore[attr-defined]
    )
    return json_response(
        accepted, status.HTTP_201_CREATED if accepted.created else status.HTTP_200_OK
    )


@router.get("/tickets/{ticket_id}", response_model=TicketPublic)
async def get_ticket(ticket_id: str, runtime: RuntimeDep) -> TicketPublic:
    """One ticket as the hotline sees it (no clear-text contact numbers)."""
    try:
        row = await service.get_ticket(engine=runtime.engine, ticket_id=ticket_id)
    except service.TicketNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id!r}") from None
    return TicketPublic.model_validate(row)
