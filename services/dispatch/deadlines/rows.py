"""A dispatch's clocks in the database (``dispatch_clocks``): started with their deadlines when a
department gets the dispatch, stopped by the actions ``workflow.CLOCK_STOPPED_BY`` names."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.profiles import ClockName
from services.dispatch.models import Dispatch, DispatchClock
from services.dispatch.staging import Staged, Writer, new_row
from services.dispatch.workflow import CLOCK_STOPPED_BY, Action


async def clocks_of(session: AsyncSession, dispatch_id: str) -> dict[str, DispatchClock]:
    """A dispatch's clocks by name."""
    rows = await session.execute(
        select(DispatchClock).where(col(DispatchClock.dispatch_id) == dispatch_id)
    )
    return {c.clock: c for c in rows.scalars()}


async def stop_clocks(
    session: AsyncSession, d: Dispatch, action: Action, now: datetime
) -> dict[str, DispatchClock]:
    """Stop the clocks this action stops; the clocks it stopped, by name."""
    stopped: dict[str, DispatchClock] = {}
    for name, clock in (await clocks_of(session, d.dispatch_id)).items():
        if clock.stopped_at is None and action in CLOCK_STOPPED_BY[ClockName(name)]:
            clock.stopped_at = now
            stopped[name] = clock
    return stopped


def any_late(stopped: dict[str, DispatchClock]) -> bool:
    """True when any of the stopped clocks had already run out when it stopped."""
    return any(c.stopped_at is not None and c.stopped_at > c.due_at for c in stopped.values())


def start_clocks(
    session: Writer,
    ctx: DispatchContext,
    d: Dispatch,
    start: datetime,
    *,
    due: dict[ClockName, datetime] | None = None,
) -> dict[ClockName, datetime]:
    """Start a dispatch's clocks at ``start``: its profile's deadlines unless ``due`` is given.
    A staged batch writes its profile's deadlines from ``Deadlines.started`` (computed, put in
    UTC and made text once per profile and start); a session's mapped clocks keep the
    calendar's zone, as its answers show them."""
    if due is None and isinstance(session, Staged):
        started = ctx.deadlines.started(ctx.profiles.get(d.time_limit_profile), start)
        times, text, out = started.utc, started.text, dict(started.due)
    else:
        if due is None:
            due = ctx.deadlines.of(ctx.profiles.get(d.time_limit_profile), start)
        times = tuple((name.value, at) for name, at in due.items())
        text, out = {name.value: at.isoformat() for name, at in due.items()}, due
    for clock, at in times:
        new_row(
            session,
            DispatchClock,
            dispatch_id=d.dispatch_id,
            clock=clock,
            started_at=start,
            due_at=at,
            original_due_at=at,
            next_escalation_at=at,
        )
    d.deadlines = dict(text)
    return out
