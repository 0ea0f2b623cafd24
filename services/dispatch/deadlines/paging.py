"""The scheduler's pages: due items are taken a page at a time up to the batch size, and items
the calendar cannot time yet never hold up the ones behind them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.context import DispatchContext
from services.dispatch.organisation.chart import OrgChart

# Pages of steps one pass looks at, at most: a further page is read only when steps of the one
# before were skipped (their deadlines beyond the calendar), so skipped steps at the head of the
# queue cannot hold up every other one.
_MAX_PAGES = 10


async def in_pages(
    session: AsyncSession,
    ctx: DispatchContext,
    fetch: Callable[[int, list[Any]], Awaitable[Sequence[Any]]],
    *,
    key: Callable[[Any], Any],
    act: Callable[[OrgChart, Any], Awaitable[bool | None]],
) -> int:
    """Act on due items a page at a time, up to the batch size; return how many were done.

    ``act`` answers True (done), False (nothing to do) or None (its step cannot be timed on the
    calendar: skipped, retried next pass). Only a page with skips makes room for a further page,
    fetched past every item already seen, so stuck items at the head never block the rest.
    """
    batch = ctx.settings.scheduler_batch_size
    seen: list[Any] = []
    done = 0
    for _ in range(_MAX_PAGES):
        items = await fetch(batch - done, seen)
        if not items:
            break
        seen.extend(key(item) for item in items)
        org = await ctx.org.chart(session)
        skipped = 0
        for item in items:
            outcome = await act(org, item)
            done += outcome is True
            skipped += outcome is None
        if not skipped or done >= batch:
            break
    return done


def rows_matched(result: Any) -> int:
    """Rows an UPDATE matched (a CursorResult's rowcount)."""
    return int(result.rowcount)
