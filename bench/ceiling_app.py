"""The ceiling: a bare FastAPI endpoint that only validates the same ticket body and answers."""

from __future__ import annotations

from fastapi import FastAPI, status

from services.intake.models import TicketAccepted, TicketIn

app = FastAPI()


@app.post("/tickets", status_code=status.HTTP_201_CREATED, response_model=TicketAccepted)
async def post_ticket(ticket: TicketIn) -> TicketAccepted:
    """Validate and answer; store nothing."""
    return TicketAccepted(ticket_id="20260101-0000001", status="received", created=True)
