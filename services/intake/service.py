"""Intake's domain operations: accept appeals and callbacks durably, answer lookups, and follow
each ticket's life through the other services' events.

Every appeal goes through the appeal groups (``groups.py``): a ticket row and its
``TicketReceived`` (and an e-mail's attachment blobs) are one unit; a batch file's good rows are
one unit; units that queue together are prepared together and committed in one transaction;
nothing is ever half-stored. Keyword-only functions, no FastAPI imports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
from sqlalchemy import String, bindparam, text
from sqlalchemy.exc import IntegrityError

from services.intake.adapters import AttachmentBlob, BatchRow
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel, UnknownChannel, get_channel
from services.intake.context import IntakeContext
from services.intake.errors import ChannelClosed, PayloadError
from services.intake.models import (
    BatchResult,
    TicketAccepted,
    batch_row_result,
)
from services.intake.pipeline import Prepared
from shared.auth import acting_principal

log = logging.getLogger(__name__)


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


def accepted_json(prepared: Prepared) -> bytes:
    """``_accepted(prepared).model_dump_json()`` as bytes, written by orjson from the row
    without building the model, when every value is of the type the model keeps as it is (a
    test holds the two equal); through the model otherwise."""
    row = prepared.row
    ticket_id = prepared.ticket_id
    category, repeat_of, count = row["category_code"], row["repeat_of"], row["repeat_count"]
    if (
        type(ticket_id) is str
        and (category is None or type(category) is str)
        and (repeat_of is None or type(repeat_of) is str)
        and type(count) is int
        and -(2**63) <= count < 2**63
    ):
        return orjson.dumps(
            {
                "ticket_id": ticket_id,
                "status": "received",
                "created": True,
                "category_code": category,
                "repeat_of": repeat_of,
                "repeat_count": count,
            }
        )
    return _accepted(prepared).model_dump_json().encode()


def _count(ctx: IntakeContext, channel: str, outcome: str, n: int = 1) -> None:
    if ctx.metrics is not None and n:
        ctx.metrics.count_tickets(channel, outcome, n)


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
    outcome = await _accept_one(ctx, channel, draft, blobs)
    return outcome if isinstance(outcome, TicketAccepted) else _accepted(outcome)


async def accept_ticket_json(
    *, ctx: IntakeContext, channel: Channel, draft: TicketDraft
) -> tuple[bool, bytes]:
    """``accept_ticket``, answered as (created, the ``TicketAccepted`` JSON it would dump): a
    new ticket's answer written from its prepared row (``accepted_json``)."""
    outcome = await _accept_one(ctx, channel, draft, ())
    if isinstance(outcome, TicketAccepted):
        return outcome.created, outcome.model_dump_json().encode()
    return True, accepted_json(outcome)


async def _accept_one(
    ctx: IntakeContext, channel: Channel, draft: TicketDraft, blobs: Sequence[AttachmentBlob]
) -> Prepared | TicketAccepted:
    """The new ticket stored (its prepared row), or the stored one of its external id."""
    staged = await ctx.groups.submit([(channel, draft)], actor=acting_principal(), blobs=blobs)
    (prepared,) = staged.prepared
    try:
        await staged.committed
    except IntegrityError:
        existing = await _existing(ctx, channel.code, [draft.external_id])
        found = existing.get(draft.external_id or "")
        if found is None:
            raise
        _count(ctx, channel.code, "existing")
        return found
    _count(ctx, channel.code, "repeat" if prepared.verdict.is_repeat else "created")
    return prepared


async def _existing(
    ctx: IntakeContext, channel: str, external_ids: Sequence[str | None]
) -> dict[str, TicketAccepted]:
    """Already stored tickets of a channel by external id."""
    wanted = sorted({e for e in external_ids if e})
    found: dict[str, TicketAccepted] = {}
    if not wanted:
        return found
    # The readers' engine: on SQLite a deferred BEGIN, so the check never queues for the write
    # lock behind another process's group commit. On PostgreSQL one statement on the driver,
    # outside a transaction: no BEGIN and ROLLBACK round trips, no SQLAlchemy result rows.
    async with ctx.reader.connect() as conn:
        dialect = conn.dialect.name
        driver = None
        if dialect == "postgresql":
            driver = (await conn.get_raw_connection()).driver_connection
        for start in range(0, len(wanted), 2000):
            chunk: Any = wanted[start : start + 2000]
            if driver is not None:
                rows: Any = await driver.fetch(_POSTGRES_EXISTING, channel, chunk)
            else:
                params = {"c": channel, "ids": orjson.dumps(chunk).decode()}
                rows = await conn.execute(_sqlite_existing(), params)
            for external_id, ticket_id, status, category_code, repeat_of, count in rows:
                found[external_id] = TicketAccepted(
                    ticket_id=ticket_id,
                    status=status,
                    created=False,
                    category_code=category_code,
                    repeat_of=repeat_of,
                    repeat_count=count,
                )
        await conn.rollback()
    return found


_EXISTING_COLUMNS = "external_id, ticket_id, status, category_code, repeat_of, repeat_count"
# Tickets of a channel by many external ids: one array (PostgreSQL) or JSON (SQLite) parameter,
# so the statement and its plan never depend on how many ids a file has. On PostgreSQL each id is
# one probe of the (channel, external_id) index (a LATERAL subquery with LIMIT, which the planner
# does not flatten into a join): as a plain join of a file's 1,000 ids, it hashed every ticket
# of the channel read by a sequential or bitmap scan, a cost that grew with the table (12 ms a
# file at 32,000 tickets, 27 ms at 96,000) where the probes cost ~3 ms whatever its size.
_POSTGRES_EXISTING = (
    "SELECT c.* FROM unnest($2::varchar[]) AS k(v) CROSS JOIN LATERAL"
    f" (SELECT {_EXISTING_COLUMNS} FROM tickets WHERE channel = $1 AND external_id = k.v"
    " LIMIT 1) AS c"
)


@cache
def _sqlite_existing() -> Any:
    """``_POSTGRES_EXISTING`` for SQLite, the ids as a JSON array."""
    return text(
        f"SELECT {_EXISTING_COLUMNS} FROM tickets WHERE channel = :c"
        " AND external_id IN (SELECT value FROM json_each(:ids))"
    ).bindparams(bindparam("ids", type_=String()))


async def accept_batch(
    *, ctx: IntakeContext, channel: Channel, rows: Sequence[BatchRow]
) -> BatchResult:
    """Store a batch file's good rows, each with its event, all in one unit; report the rest.

    Rows whose external id the channel already sent are answered with their first ticket;
    bad rows store nothing and say why, by row number and field.
    """
    # Each row's result as a plain dict of its BatchRowResult's fields (``batch_row_result``):
    # the answer is written from them in one call for the file, no model made a row.
    results: dict[int, dict[str, Any]] = {}
    drafts: list[tuple[int, TicketDraft]] = []
    for number, outcome in rows:
        if isinstance(outcome, PayloadError):
            results[number] = batch_row_result(number, "rejected", errors=[outcome.as_dict()])
        else:
            drafts.append((number, outcome))
    pending = drafts
    for _attempt in range(3):
        existing = await _existing(ctx, channel.code, [d.external_id for _, d in pending])
        fresh: list[tuple[int, TicketDraft]] = []
        for number, draft in pending:
            earlier = existing.get(draft.external_id or "")
            if earlier is not None:
                results[number] = batch_row_result(
                    number,
                    "existing",
                    ticket_id=earlier.ticket_id,
                    external_id=draft.external_id,
                    category_code=earlier.category_code,
                    repeat_of=earlier.repeat_of,
                    repeat_count=earlier.repeat_count,
                )
            else:
                fresh.append((number, draft))
        if not fresh:
            break
        staged = await ctx.groups.submit(
            [(channel, draft) for _, draft in fresh], actor=acting_principal()
        )
        try:
            await staged.committed
        except IntegrityError:
            # Another upload of the same rows won a race: look again and store the rest.
            pending = fresh
            continue
        prepared = staged.prepared
        for (number, draft), p in zip(fresh, prepared, strict=True):
            verdict = p.verdict
            # ``batch_row_result`` written out: a call with keywords costs as much as the dict.
            results[number] = {
                "row": number,
                "status": "created",
                "ticket_id": p.ticket_id,
                "external_id": draft.external_id,
                # As the row holds them (``Pipeline._row``), without making it.
                "category_code": p.normalized.category_code,
                "repeat_of": verdict.repeat_of,
                "repeat_count": verdict.repeat_count,
                "errors": (),
            }
        break
    else:
        for number, draft in pending:
            results.setdefault(
                number,
                batch_row_result(
                    number,
                    "rejected",
                    external_id=draft.external_id,
                    errors=[{"field": "external_id", "message": "conflicting concurrent upload"}],
                ),
            )
    ordered = [results[n] for n in sorted(results)]
    statuses = [r["status"] for r in ordered]
    tally = {s: statuses.count(s) for s in ("created", "existing", "rejected")}
    _count(ctx, channel.code, "created", tally["created"])
    _count(ctx, channel.code, "existing", tally["existing"])
    if ctx.metrics is not None and tally["rejected"]:
        ctx.metrics.rows_rejected.labels(channel.code).inc(tally["rejected"])
    return BatchResult(channel.code, results=ordered, **tally)
