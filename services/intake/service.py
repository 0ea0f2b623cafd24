"""Intake's domain operations: accept appeals and callbacks durably, answer lookups, and follow
each ticket's life through the other services' events.

Every write goes through the group committer: a ticket row and its ``TicketReceived`` (and an
e-mail's attachment blobs) are one unit; a batch file's good rows are one unit; nothing is ever
half-stored. Keyword-only functions, no FastAPI imports.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import String, and_, bindparam, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.intake import lifecycle
from services.intake.adapters import AttachmentBlob, BatchRow
from services.intake.canonical import CallbackDraft, TicketDraft
from services.intake.channels import Channel, UnknownChannel, get_channel
from services.intake.context import IntakeContext
from services.intake.errors import PayloadError
from services.intake.models import (
    BLOBS,
    CALLBACKS,
    DISPATCHES,
    HISTORY,
    TICKETS,
    AttachmentView,
    BatchAccepted,
    BatchRowResult,
    CallbackAccepted,
    CallbackView,
    CitizenView,
    HistoryEntry,
    LocationView,
    TicketAccepted,
    TicketPage,
    TicketSummary,
    TicketView,
)
from services.intake.pipeline import Prepared
from shared import pii, taxonomy
from shared.errors import DomainError
from shared.events.base import Event, utcnow
from shared.events.intake import FeedbackReceived
from shared.outbox import event_row

log = logging.getLogger(__name__)


class TicketNotFound(DomainError, LookupError):
    """No ticket has this id."""

    def __init__(self, ticket_id: str) -> None:
        self.ticket_id = ticket_id
        super().__init__(f"no ticket {ticket_id!r}")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "field": "ticket_id"}


class AttachmentNotFound(LookupError):
    """The ticket has no attachment with this SHA-256."""


class ChannelClosed(DomainError):
    """The channel exists but takes no new appeals (merged away, kept for its history)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        super().__init__(f"channel {channel.code!r} is inactive and takes no new appeals")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "field": "code"}


def appeal_channel(code: str) -> Channel:
    """The active appeal channel ``code``; UnknownChannel, ChannelClosed or a PayloadError."""
    channel = get_channel(code)
    if channel.kind != "appeal":
        raise PayloadError(
            "channel", f"{code!r} is a callback channel: post to /channels/{code}/callbacks"
        )
    if not channel.active:
        raise ChannelClosed(channel)
    return channel


def callback_channel(code: str) -> Channel:
    """The callback channel ``code``; a PayloadError naming ``channel`` otherwise."""
    try:
        channel = get_channel(code)
    except UnknownChannel:
        raise PayloadError("channel", f"unknown channel code {code!r}") from None
    if channel.kind != "callback":
        raise PayloadError("channel", f"{code!r} takes appeals, not callbacks")
    return channel


# --------------------------------------------------------------------------------------------
# Accepting appeals


def _accepted(prepared: Prepared) -> TicketAccepted:
    row = prepared.row
    return TicketAccepted(
        ticket_id=prepared.ticket_id,
        status="received",
        created=True,
        category_code=row["category_code"],
        repeat_of=row["repeat_of"],
        repeat_count=row["repeat_count"],
    )


def _count(ctx: IntakeContext, channel: str, outcome: str, n: int = 1) -> None:
    if ctx.metrics is not None and n:
        ctx.metrics.tickets.labels(channel, outcome).inc(n)


def _blob_writer(blobs: Sequence[AttachmentBlob], now: datetime) -> Any:
    """A unit of work that stores attachment bytes once per SHA-256 (a re-sent file is free)."""
    rows = list(
        {
            b.meta.sha256: {
                "sha256": b.meta.sha256,
                "content_type": b.meta.content_type,
                "size": b.meta.size,
                "data": b.data,
                "created_at": now,
            }
            for b in blobs
        }.values()
    )

    async def store_blobs(conn: AsyncConnection) -> None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(BLOBS).on_conflict_do_nothing(index_elements=["sha256"])
        await conn.execute(statement, rows)

    return store_blobs


async def accept_ticket(
    *,
    ctx: IntakeContext,
    channel: Channel,
    draft: TicketDraft,
    blobs: Sequence[AttachmentBlob] = (),
) -> TicketAccepted:
    """Normalize one appeal and store it with its event (and its attachments) in one unit.

    The same (channel, external id) answers with the first ticket and ``created=False``.
    """
    now = utcnow()
    (prepared,) = await ctx.ready_pipeline.prepare([(channel, draft)], now=now)
    inserts = [(TICKETS, prepared.row), *ctx.outbox.rows([prepared.event])]
    try:
        await ctx.committer.submit(
            inserts=inserts, work=_blob_writer(blobs, now) if blobs else None
        )
    except IntegrityError:
        existing = await _existing(ctx, channel.code, [draft.external_id])
        found = existing.get(draft.external_id or "")
        if found is None:
            raise
        _count(ctx, channel.code, "existing")
        return found
    _count(ctx, channel.code, "repeat" if prepared.verdict.is_repeat else "created")
    return _accepted(prepared)


async def _existing(
    ctx: IntakeContext, channel: str, external_ids: Sequence[str | None]
) -> dict[str, TicketAccepted]:
    """Already stored tickets of a channel by external id."""
    wanted = sorted({e for e in external_ids if e})
    found: dict[str, TicketAccepted] = {}
    if not wanted:
        return found
    # The readers' engine: on SQLite a deferred BEGIN, so the check never queues for the write
    # lock behind another process's group commit.
    async with ctx.reader.connect() as conn:
        dialect = conn.dialect.name
        for start in range(0, len(wanted), 2000):
            chunk: Any = wanted[start : start + 2000]
            if dialect != "postgresql":
                chunk = orjson.dumps(chunk).decode()
            rows = await conn.execute(_existing_statement(dialect), {"c": channel, "ids": chunk})
            for row in rows:
                found[row.external_id] = TicketAccepted(
                    ticket_id=row.ticket_id,
                    status=row.status,
                    created=False,
                    category_code=row.category_code,
                    repeat_of=row.repeat_of,
                    repeat_count=row.repeat_count,
                )
        await conn.rollback()
    return found


@cache
def _existing_statement(dialect: str) -> Any:
    """Tickets of a channel by many external ids: one array (PostgreSQL) or JSON (SQLite)
    parameter, so the statement and its plan never depend on how many ids a file has."""
    columns = "external_id, ticket_id, status, category_code, repeat_of, repeat_count"
    if dialect == "postgresql":
        sql = (
            f"SELECT {columns} FROM unnest(CAST(:ids AS varchar[])) AS k(v)"
            " JOIN tickets ON channel = :c AND external_id = k.v"
        )
        ids = bindparam("ids", type_=ARRAY(String()))
    else:
        sql = (
            f"SELECT {columns} FROM tickets WHERE channel = :c"
            " AND external_id IN (SELECT value FROM json_each(:ids))"
        )
        ids = bindparam("ids", type_=String())
    return text(sql).bindparams(ids)


async def accept_batch(
    *, ctx: IntakeContext, channel: Channel, rows: Sequence[BatchRow]
) -> BatchAccepted:
    """Store a batch file's good rows, each with its event, all in one unit; report the rest.

    Rows whose external id the channel already sent are answered with their first ticket;
    bad rows store nothing and say why, by row number and field.
    """
    results: dict[int, BatchRowResult] = {}
    drafts: list[tuple[int, TicketDraft]] = []
    for number, outcome in rows:
        if isinstance(outcome, PayloadError):
            results[number] = BatchRowResult(
                row=number, status="rejected", errors=[outcome.as_dict()]
            )
        else:
            drafts.append((number, outcome))
    pending = drafts
    for _attempt in range(3):
        existing = await _existing(ctx, channel.code, [d.external_id for _, d in pending])
        fresh: list[tuple[int, TicketDraft]] = []
        for number, draft in pending:
            earlier = existing.get(draft.external_id or "")
            if earlier is not None:
                results[number] = BatchRowResult(
                    row=number,
                    status="existing",
                    ticket_id=earlier.ticket_id,
                    external_id=draft.external_id,
                )
            else:
                fresh.append((number, draft))
        if not fresh:
            break
        prepared = await ctx.ready_pipeline.prepare(
            [(channel, draft) for _, draft in fresh], now=utcnow()
        )
        inserts = [(TICKETS, p.row) for p in prepared]
        inserts += ctx.outbox.rows(p.event for p in prepared)
        try:
            await ctx.committer.submit(inserts=inserts)
        except IntegrityError:
            # Another upload of the same rows won a race: look again and store the rest.
            pending = fresh
            continue
        for (number, draft), p in zip(fresh, prepared, strict=True):
            results[number] = BatchRowResult(
                row=number, status="created", ticket_id=p.ticket_id, external_id=draft.external_id
            )
        break
    else:
        for number, draft in pending:
            results.setdefault(
                number,
                BatchRowResult(
                    row=number,
                    status="rejected",
                    external_id=draft.external_id,
                    errors=[{"field": "external_id", "message": "conflicting concurrent upload"}],
                ),
            )
    ordered = [results[n] for n in sorted(results)]
    tally = {s: sum(r.status == s for r in ordered) for s in ("created", "existing", "rejected")}
    _count(ctx, channel.code, "created", tally["created"])
    _count(ctx, channel.code, "existing", tally["existing"])
    if ctx.metrics is not None and tally["rejected"]:
        ctx.metrics.rows_rejected.labels(channel.code).inc(tally["rejected"])
    return BatchAccepted(channel=channel.code, rows=len(ordered), results=ordered, **tally)


# --------------------------------------------------------------------------------------------
# Callbacks


async def _existing_callback(
    ctx: IntakeContext, channel: str, external_id: str | None
) -> CallbackAccepted | None:
    if external_id is None:
        return None
    c = CALLBACKS
    async with ctx.engine.connect() as conn:
        row = (
            await conn.execute(
                select(c.c.feedback_id, c.c.ticket_id, c.c.revision).where(
                    c.c.channel == channel, c.c.external_id == external_id
                )
            )
        ).first()
        await conn.rollback()
    if row is None:
        return None
    return CallbackAccepted(
        feedback_id=row.feedback_id, ticket_id=row.ticket_id, revision=row.revision, created=False
    )


async def _ticket_exists(ctx: IntakeContext, ticket_id: str) -> bool:
    async with ctx.reader.connect() as conn:
        found = (
            await conn.execute(select(TICKETS.c.ticket_id).where(TICKETS.c.ticket_id == ticket_id))
        ).first()
        await conn.rollback()
    return found is not None


async def record_callback(
    *, ctx: IntakeContext, channel: Channel, draft: CallbackDraft
) -> CallbackAccepted:
    """Store a 回访 result as the ticket's next revision, with its ``FeedbackReceived``.

    A later revision replaces the earlier in effect (the event names the one it replaces);
    the same (channel, external id) answers with the first callback and ``created=False``.
    """
    earlier = await _existing_callback(ctx, channel.code, draft.external_id)
    if earlier is not None:
        return earlier
    if not await _ticket_exists(ctx, draft.ticket_id):
        raise TicketNotFound(draft.ticket_id)
    now = utcnow()
    received_at = draft.received_at or now
    c = CALLBACKS

    async def store(conn: AsyncConnection) -> CallbackAccepted:
        previous = (
            await conn.execute(
                select(c.c.feedback_id, c.c.revision)
                .where(c.c.ticket_id == draft.ticket_id)
                .order_by(c.c.revision.desc())
                .limit(1)
            )
        ).first()
        revision = previous.revision + 1 if previous is not None else 1
        feedback_id = f"{draft.ticket_id}-R{revision}"
        replaces = previous.feedback_id if previous is not None else None
        await conn.execute(
            c.insert(),
            [
                {
                    "feedback_id": feedback_id,
                    "ticket_id": draft.ticket_id,
                    "revision": revision,
                    "channel": channel.code,
                    "external_id": draft.external_id,
                    "resolved": draft.resolved,
                    "satisfaction": draft.satisfaction,
                    "comment": draft.comment,
                    "received_at": received_at,
                    "accepted_at": now,
                    "extra": draft.extra,
                }
            ],
        )
        event = FeedbackReceived(
            ticket_id=draft.ticket_id,
            feedback_id=feedback_id,
            resolved=draft.resolved,
            satisfaction=draft.satisfaction,
            comment=pii.scrub_text(draft.comment) if draft.comment else None,
            revision=revision,
            channel=channel.code,
            received_at=received_at,
            replaces=replaces,
        )
        await conn.execute(ctx.outbox.table.insert(), [event_row(event)])
        return CallbackAccepted(
            feedback_id=feedback_id,
            ticket_id=draft.ticket_id,
            revision=revision,
            replaces=replaces,
            created=True,
        )

    for _attempt in range(5):
        try:
            accepted: CallbackAccepted = await ctx.committer.submit(work=store)
        except IntegrityError:
            # Either the same callback arrived twice at once, or another revision won the race.
            earlier = await _existing_callback(ctx, channel.code, draft.external_id)
            if earlier is not None:
                return earlier
            continue
        return accepted
    raise RuntimeError(f"could not number the callback of {draft.ticket_id} (contention)")


# --------------------------------------------------------------------------------------------
# Reading tickets


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
    return TicketSummary(
        ticket_id=row.ticket_id,
        channel=row.channel,
        external_id=pii.scrub_text(row.external_id) if row.external_id else None,
        received_at=row.received_at,
        title=pii.scrub_text(row.title),
        category_code=row.category_code,
        urgency=row.urgency,
        is_enterprise=row.is_enterprise,
        status=row.status,
        repeat_of=row.repeat_of,
        repeat_count=row.repeat_count,
        grid_code=row.grid_code,
        area_code=row.area_code,
        department_code=row.department_code,
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
    return TicketView(
        **_summary(row).model_dump(),
        channel_name=_channel_name(row.channel),
        accepted_at=row.accepted_at,
        content=pii.scrub_text(row.content),
        citizen=CitizenView(
            display_name=pii.mask_name(row.citizen_name),
            phone_masked=pii.mask_phone(row.citizen_phone),
            id_number_masked=pii.mask_id_number(row.citizen_id_number),
            email_masked=pii.mask_email(row.citizen_email),
            citizen_hash=row.citizen_hash,
        ),
        location=LocationView(
            address=pii.scrub_text(row.address) if row.address else None,
            longitude=row.longitude,
            latitude=row.latitude,
            grid_code=row.grid_code,
            area_code=row.area_code,
        ),
        category_name=_category_name(row.category_code),
        category_source=row.category_source,
        time_limit_profile=row.time_limit_profile,
        status_at=row.status_at,
        due_at=row.due_at,
        attachments=[
            AttachmentView(**{**a, "filename": pii.scrub_text(a["filename"])})
            for a in row.attachments or ()
        ],
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


class BadCursor(DomainError, ValueError):
    """The cursor was not one this service handed out."""

    def body(self) -> dict[str, Any]:
        return {"detail": "cursor: not a cursor this service handed out", "field": "cursor"}


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
    if parsed.tzinfo is None or not ticket_id:
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


# --------------------------------------------------------------------------------------------
# Following the ticket's life (event handlers call this)


async def apply_lifecycle(*, session: AsyncSession, event: Event) -> None:
    """Record what a dispatch or mediation event means for its ticket: the dispatch's state, a
    history step, and the ticket's status (a ticket intake never took gets the history only)."""
    step = lifecycle.step_for(event)
    if step is None:
        return
    d = DISPATCHES
    at = event.occurred_at
    for change in step.changes:
        current = (
            await session.execute(
                select(d.c.dispatch_id).where(d.c.dispatch_id == change.dispatch_id)
            )
        ).first()
        values: dict[str, Any] = {"updated_at": at}
        if change.state is not None:
            values["state"] = change.state
        if change.department_code is not None:
            values["department_code"] = change.department_code
        if change.due_at is not None:
            values["due_at"] = change.due_at
        if change.resolved is not None:
            values["resolved"] = change.resolved
        if current is None:
            await session.execute(
                d.insert().values(
                    dispatch_id=change.dispatch_id,
                    ticket_id=step.ticket_id,
                    state=change.state or "assigned",
                    **{k: v for k, v in values.items() if k != "state"},
                )
            )
        else:
            await session.execute(
                update(d).where(d.c.dispatch_id == change.dispatch_id).values(**values)
            )
    dispatches = (
        await session.execute(
            select(
                d.c.dispatch_id, d.c.state, d.c.department_code, d.c.due_at, d.c.updated_at
            ).where(d.c.ticket_id == step.ticket_id)
        )
    ).all()
    status = lifecycle.ticket_status((r.dispatch_id, r.state) for r in dispatches)
    open_rows = [
        r
        for r in dispatches
        if r.state in lifecycle.OPEN_STATES and not r.dispatch_id.startswith(lifecycle.CASE_PREFIX)
    ]
    latest = max(open_rows, key=lambda r: r.updated_at, default=None)
    dues = [r.due_at for r in open_rows if r.due_at is not None]
    await session.execute(
        update(TICKETS)
        .where(TICKETS.c.ticket_id == step.ticket_id)
        .values(
            status=status,
            status_at=at,
            department_code=latest.department_code if latest is not None else step.department_code,
            due_at=min(dues) if dues else None,
            **(
                {"time_limit_profile": step.time_limit_profile}
                if step.time_limit_profile is not None
                else {}
            ),
        )
    )
    await session.execute(
        HISTORY.insert().values(
            ticket_id=step.ticket_id,
            event_id=str(event.event_id),
            event_type=event.event_type,
            occurred_at=at,
            dispatch_id=step.dispatch_id,
            department_code=step.department_code,
            note=step.note,
            status=status,
        )
    )
