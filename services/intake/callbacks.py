"""Callbacks (回访): "was it resolved, were you satisfied?" stored as the ticket's next revision
with its ``FeedbackReceived``, in one unit of the group committer."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.canonical import CallbackDraft
from services.intake.channels import Channel
from services.intake.context import IntakeContext
from services.intake.errors import TicketNotFound
from services.intake.models import (
    CALLBACKS,
    TICKETS,
    CallbackAccepted,
)
from shared import pii
from shared.events.base import utcnow
from shared.events.intake import FeedbackReceived
from shared.outbox import event_row

log = logging.getLogger(__name__)


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
