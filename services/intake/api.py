"""Intake's HTTP routes: thin — validate, call the service, map errors."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from services.intake import service
from services.intake.models import TicketAccepted, TicketIn, TicketPublic
from shared.runtime import RuntimeDep

router = APIRouter(tags=["tickets"])


@router.post(
    "/tickets",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketAccepted,
    responses={200: {"model": TicketAccepted, "description": "Already accepted (same channel id)"}},
)
async def post_ticket(ticket: TicketIn, runtime: RuntimeDep, response: Response) -> TicketAccepted:
    """Accept one ticket; answered only after it is durably stored with its event."""
    accepted = await service.accept_ticket(
        ticket=ticket,
        engine=runtime.engine,
        committer=runtime.committer,  # type: ignore[arg-type]
        outbox=runtime.outbox,
        ids=runtime.extras["ids"],
        salt=runtime.settings.citizen_hash_salt,  # type: ignore[attr-defined]
    )
    if not accepted.created:
        response.status_code = status.HTTP_200_OK
    return accepted


@router.get("/tickets/{ticket_id}", response_model=TicketPublic)
async def get_ticket(ticket_id: str, runtime: RuntimeDep) -> TicketPublic:
    """One ticket as the hotline sees it (no clear-text contact numbers)."""
    try:
        row = await service.get_ticket(engine=runtime.engine, ticket_id=ticket_id)
    except service.TicketNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id!r}") from None
    return TicketPublic.model_validate(row)
