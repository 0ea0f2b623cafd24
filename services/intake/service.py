"""Intake's domain operations: accept a ticket durably (ticket row and event in one commit)."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.ids import TicketIdAllocator
from services.intake.models import Ticket, TicketAccepted, TicketIn
from shared.db import GroupCommitter
from shared.events.base import utcnow
from shared.events.intake import Citizen, Location, TicketReceived
from shared.outbox import Outbox

_TICKETS = Ticket.__table__  # type: ignore[attr-defined]
_DIGITS = re.compile(r"\D")


class TicketNotFound(LookupError):
    """No ticket has this id."""


def mask_phone(phone: str | None) -> str | None:
    """``13812345678`` → ``138****5678``; short numbers keep only their last two digits."""
    if not phone:
        return None
    digits = _DIGITS.sub("", phone)
    if len(digits) >= 7:
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * max(len(digits) - 2, 0) + digits[-2:]


def citizen_hash(phone: str | None, *, salt: str) -> str | None:
    """A salted HMAC of the normalized phone: links a citizen's appeals without revealing them."""
    if not phone:
        return None
    digits = _DIGITS.sub("", phone)
    return hmac.new(salt.encode(), digits.encode(), hashlib.sha256).hexdigest()


async def accept_ticket(
    *,
    ticket: TicketIn,
    engine: AsyncEngine,
    committer: GroupCommitter,
    outbox: Outbox,
    ids: TicketIdAllocator,
    salt: str,
) -> TicketAccepted:
    """Store the ticket and its ``TicketReceived`` event in one transaction, then answer.

    The same (channel, external id) always answers with the first ticket's id and
    ``created=False``: a channel may retry safely.
    """
    received_at = ticket.received_at or utcnow()
    ticket_id = await ids.next_id(received_at)
    category = ticket.category_code or "1901"
    row: dict[str, Any] = {
        "ticket_id": ticket_id,
        "channel": ticket.channel,
        "external_id": ticket.external_id,
        "received_at": received_at,
        "title": ticket.title,
        "content": ticket.content,
        "citizen_name": ticket.citizen_name,
        "citizen_phone": ticket.citizen_phone,
        "citizen_id_number": None,
        "citizen_hash": citizen_hash(ticket.citizen_phone, salt=salt),
        "address": ticket.address,
        "longitude": ticket.longitude,
        "latitude": ticket.latitude,
        "grid_code": None,
        "category_code": category,
        "urgency": ticket.urgency,
        "is_enterprise": ticket.is_enterprise,
        "repeat_of": None,
        "repeat_count": 0,
        "time_limit_profile": "enterprise_2115" if ticket.is_enterprise else "standard",
        "status": "received",
        "extra": {},
    }
    event = TicketReceived(
        ticket_id=ticket_id,
        channel=ticket.channel,
        received_at=received_at,
        title=ticket.title,
        content=ticket.content,
        citizen=Citizen(
            display_name=(ticket.citizen_name[:1] + "*") if ticket.citizen_name else None,
            phone_masked=mask_phone(ticket.citizen_phone),
            citizen_hash=row["citizen_hash"],
        ),
        location=Location(
            address=ticket.address, longitude=ticket.longitude, latitude=ticket.latitude
        ),
        category_code=category,
        urgency=ticket.urgency,
        is_enterprise=ticket.is_enterprise,
        external_id=ticket.external_id,
        time_limit_profile=row["time_limit_profile"],
    )
    try:
        await committer.submit(inserts=[(_TICKETS, row), *outbox.rows([event])])
    except IntegrityError:
        existing = await _find_by_external_id(engine, ticket.channel, ticket.external_id)
        if existing is None:
            raise
        return TicketAccepted(ticket_id=existing, status="received", created=False)
    return TicketAccepted(ticket_id=ticket_id, status="received", created=True)


async def _find_by_external_id(
    engine: AsyncEngine, channel: str, external_id: str | None
) -> str | None:
    if external_id is None:
        return None
    async with engine.connect() as conn:
        found = await conn.execute(
            select(_TICKETS.c.ticket_id).where(
                _TICKETS.c.channel == channel, _TICKETS.c.external_id == external_id
            )
        )
        return found.scalar_one_or_none()


async def get_ticket(*, engine: AsyncEngine, ticket_id: str) -> dict[str, Any]:
    """One ticket's row; TicketNotFound if there is none."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(_TICKETS).where(_TICKETS.c.ticket_id == ticket_id))
        ).first()
    if row is None:
        raise TicketNotFound(ticket_id)
    return dict(row._mapping)
