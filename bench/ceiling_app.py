"""The ceilings: bare FastAPI endpoints that only validate the same bodies and answer.

``POST /tickets`` validates one ticket the way FastAPI does by default; ``POST /batch`` parses a
CSV file and validates every row into the same model — what a batch costs before any
normalization or storage.
"""

from __future__ import annotations

import csv
import io

from fastapi import FastAPI, Request, status
from pydantic import ValidationError

from services.intake.models import TicketAccepted, TicketIn

app = FastAPI()

_COLUMNS = {
    "external_id": "external_id",
    "citizen_name": "citizen_name",
    "citizen_phone": "citizen_phone",
    "title": "title",
    "content": "content",
    "address": "address",
    "category_code": "category_code",
}


@app.post("/tickets", status_code=status.HTTP_201_CREATED, response_model=TicketAccepted)
async def post_ticket(ticket: TicketIn) -> TicketAccepted:
    """Validate and answer; store nothing."""
    return TicketAccepted(ticket_id="20260101-0000001", status="received", created=True)


@app.post("/batch", status_code=status.HTTP_201_CREATED)
async def post_batch(request: Request) -> dict[str, int]:
    """Parse a CSV file and validate each row; store nothing."""
    text = (await request.body()).decode("utf-8-sig")
    good = bad = 0
    for row in csv.DictReader(io.StringIO(text)):
        try:
            TicketIn.model_validate({k: v for k, v in row.items() if k in _COLUMNS and v})
        except ValidationError:
            bad += 1
        else:
            good += 1
    return {"created": good, "rejected": bad}
