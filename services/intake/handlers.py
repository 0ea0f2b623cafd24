"""Intake's event handlers: follow each ticket through dispatch and mediation, so the hotline and
Open311 can tell a citizen where their appeal stands."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import lifecycle, tracking
from services.intake.context import IntakeContext
from shared.events.base import Event
from shared.inbox import Batch, HandlerMap


def event_handlers(ctx: IntakeContext) -> HandlerMap:
    """The handlers of one intake app: every tracked dispatch and mediation event moves its
    ticket's state, history and status the same way."""

    async def on_ticket_events(events: Sequence[Event], *, session: AsyncSession) -> list[str]:
        """Dispatch and mediation events about tickets: states, history steps and statuses, a
        fetched batch at a time. The history step, unique by event id, is the record that an
        event was applied: no inbox look-up and no inbox row (``Batch(inbox_rows=False)``)."""
        return await tracking.apply_lifecycles(session=session, events=events)

    handler = Batch(on_ticket_events, deduplicates=True, inbox_rows=False)
    return dict.fromkeys(lifecycle.TRACKED, handler)
