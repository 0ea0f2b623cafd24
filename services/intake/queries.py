"""Intake's read side: one ticket with its history, ticket listings with keyset cursors, and
attachments — on the readers' engine, every string scrubbed on the way out."""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from services.intake.canonical import EARLIEST_RECEIVED_AT
from services.intake.channels import UnknownChannel, get_channel
from services.intake.context import IntakeContext
from services.intake.errors import AttachmentNotFound, BadCursor, TicketNotFound
from services.intake.models import (
    BLOBS,
    CALLBACKS,
    HISTORY,
    TICKETS,
    CallbackView,
    HistoryEntry,
    TicketPage,
    TicketSummary,
    TicketView,
)
from services.intake.normalize import scrub_public
from shared import pii, taxonomy

log = logging.getLogger(__name__)


def _category_name(code: str) -> str | None:
    try:
        return taxonomy.get(code).name_zh
    except KeyError:
        return None


def _channel_name(code: str) -> str | None:
    try:
        return get_channel(code).name_zh
    except UnknownChannel:
        return None


def _summary(row: Any) -> TicketSummary:
    # Every string scrubbed but the structured ones: a row may hold a number anywhere (one
    # stored before grid codes were checked has a phone number for a grid code).
    return TicketSummary(
        **scrub_public(
            {
                "ticket_id": row.ticket_id,
                "channel": row.channel,
                "external_id": row.external_id,
                "received_at": row.received_at,
                "title": row.title,
                "category_code": row.category_code,
                "urgency": row.urgency,
                "is_enterprise": row.is_enterprise,
                "status": row.status,
                "repeat_of": row.repeat_of,
                "repeat_count": row.repeat_count,
                "grid_code": row.grid_code,
                "area_code": row.area_code,
                "department_code": row.department_code,
            }
        )
    )


async def ticket_row(*, ctx: IntakeContext, ticket_id: str) -> Any:
    """One ticket's row; TicketNotFound if there is none."""
    async with ctx.reader.connect() as conn:
        row = (await conn.execute(select(TICKETS).where(TICKETS.c.ticket_id == ticket_id))).first()
        await conn.rollback()
    if row is None:
        raise TicketNotFound(ticket_id)
    return row


async def get_ticket(*, ctx: IntakeContext, ticket_id: str) -> TicketView:
    """One ticket as the hotline sees it: masked contact, scrubbed text, status, history."""
    row = await ticket_row(ctx=ctx, ticket_id=ticket_id)
    async with ctx.reader.connect() as conn:
        steps = (
            await conn.execute(
                select(HISTORY)
                .where(HISTORY.c.ticket_id == ticket_id)
                .order_by(HISTORY.c.occurred_at, HISTORY.c.id)
            )
        ).all()
        callbacks = (
            await conn.execute(
                select(CALLBACKS)
                .where(CALLBACKS.c.ticket_id == ticket_id)
                .order_by(CALLBACKS.c.revision)
            )
        ).all()
        await conn.rollback()
    history = [
        HistoryEntry(
            at=row.received_at,
            type="intake.ticket.received",
            status="received",
            note=f"received on {row.channel}",
        ),
        *(
            HistoryEntry(
                at=s.occurred_at,
                type=s.event_type,
                status=s.status,
                department_code=s.department_code,
                dispatch_id=s.dispatch_id,
                note=s.note,
            )
            for s in steps
        ),
        *(
            HistoryEntry(
                at=c.accepted_at,
                type="intake.feedback.received",
                note=f"callback r{c.revision}: resolved={c.resolved}, {c.satisfaction}",
            )
            for c in callbacks
        ),
    ]
    history.sort(key=lambda h: h.at)
    last = len(callbacks) - 1
    details = scrub_public(
        {
            "channel_name": _channel_name(row.channel),
            "accepted_at": row.accepted_at,
            "content": row.content,
            "citizen": {
                "display_name": pii.mask_name(row.citizen_name),
                "phone_masked": pii.mask_phone(row.citizen_phone),
                "id_number_masked": pii.mask_id_number(row.citizen_id_number),
                "email_masked": pii.mask_email(row.citizen_email),
                "citizen_hash": row.citizen_hash,
            },
            "location": {
                "address": row.address,
                "longitude": row.longitude,
                "latitude": row.latitude,
                "grid_code": row.grid_code,
                "area_code": row.area_code,
            },
            "category_name": _category_name(row.category_code),
            "category_source": row.category_source,
            "time_limit_profile": row.time_limit_profile,
            "status_at": row.status_at,
            "due_at": row.due_at,
            "attachments": list(row.attachments or ()),
        }
    )
    return TicketView(
        **_summary(row).model_dump(),
        **details,
        history=history,
        callbacks=[
            CallbackView(
                feedback_id=c.feedback_id,
                revision=c.revision,
                channel=c.channel,
                resolved=c.resolved,
                satisfaction=c.satisfaction,
                comment=pii.scrub_text(c.comment) if c.comment else None,
                received_at=c.received_at,
                in_effect=i == last,
            )
            for i, c in enumerate(callbacks)
        ],
    )


@dataclass(frozen=True, slots=True)
class TicketQuery:
    """Filters of the ticket list; every one optional."""

    channel: str | None = None
    category: str | None = None  # a leaf, or a top level meaning all its leaves
    statuses: tuple[str, ...] = ()
    received_from: datetime | None = None
    received_to: datetime | None = None
    repeat: bool | None = None
    ticket_ids: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()  # any of these channels (Open311's public scope)
    limit: int = 50
    cursor: str | None = None


def encode_cursor(received_at: datetime, ticket_id: str) -> str:
    """An opaque keyset cursor: the last item's (received_at, ticket_id)."""
    raw = f"{received_at.isoformat()}|{ticket_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The inverse of ``encode_cursor``; BadCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, ticket_id = raw.split("|", 1)
        parsed = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor(cursor) from None
    if parsed.tzinfo is None or not ticket_id or parsed < EARLIEST_RECEIVED_AT:
        raise BadCursor(cursor)
    return parsed, ticket_id


async def find_tickets(*, ctx: IntakeContext, query: TicketQuery) -> list[Any]:
    """Ticket rows matching the query, newest first, at most ``limit`` (+1 to detect more)."""
    t = TICKETS
    statement = select(t)
    if query.channel:
        statement = statement.where(t.c.channel == query.channel)
    if query.channels:
        statement = statement.where(t.c.channel.in_(query.channels))
    if query.category:
        if len(query.category) == 2:
            statement = statement.where(t.c.category_code.like(f"{query.category}%"))
        else:
            statement = statement.where(t.c.category_code == query.category)
    if query.statuses:
        statement = statement.where(t.c.status.in_(query.statuses))
    if query.received_from is not None:
        statement = statement.where(t.c.received_at >= query.received_from)
    if query.received_to is not None:
        statement = statement.where(t.c.received_at <= query.received_to)
    if query.repeat is not None:
        statement = statement.where(
            t.c.repeat_of.is_not(None) if query.repeat else t.c.repeat_of.is_(None)
        )
    if query.ticket_ids:
        statement = statement.where(t.c.ticket_id.in_(query.ticket_ids))
    if query.cursor:
        at, last_id = decode_cursor(query.cursor)
        statement = statement.where(
            or_(t.c.received_at < at, and_(t.c.received_at == at, t.c.ticket_id < last_id))
        )
    statement = statement.order_by(t.c.received_at.desc(), t.c.ticket_id.desc()).limit(
        query.limit + 1
    )
    async with ctx.reader.connect() as conn:
        rows = (await conn.execute(statement)).all()
        await conn.rollback()
    return list(rows)


async def list_tickets(*, ctx: IntakeContext, query: TicketQuery) -> TicketPage:
    """A page of tickets, newest first, with the cursor of the next page."""
    rows = await find_tickets(ctx=ctx, query=query)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = encode_cursor(rows[-1].received_at, rows[-1].ticket_id) if more else None
    return TicketPage(items=[_summary(r) for r in rows], next_cursor=next_cursor)


async def get_attachment(
    *, ctx: IntakeContext, ticket_id: str, sha256: str
) -> tuple[dict[str, Any], bytes]:
    """An attachment of a ticket: its metadata and bytes."""
    row = await ticket_row(ctx=ctx, ticket_id=ticket_id)
    meta = next((a for a in row.attachments or () if a.get("sha256") == sha256), None)
    if meta is None:
        raise AttachmentNotFound(sha256)
    async with ctx.reader.connect() as conn:
        data = (
            await conn.execute(select(BLOBS.c.data).where(BLOBS.c.sha256 == sha256))
        ).scalar_one_or_none()
        await conn.rollback()
    if data is None:
        raise AttachmentNotFound(sha256)
    return meta, data
