"""督着办: a pooled dispatch nobody grabbed before its window ran out (``grab_until``) goes to
the first-ranked eligible department, supervised, with its clocks starting then. Each
assignment is claimed with a conditional UPDATE, so a grab racing it, or a second replica, wins
or loses cleanly."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.paging import in_pages, rows_matched
from services.dispatch.deadlines.rows import start_clocks
from services.dispatch.models import Dispatch, DispatchAction, GrabOffer
from services.dispatch.organisation.chart import OrgChart
from services.dispatch.placement import assigned_event
from services.dispatch.transitions import state_of
from services.dispatch.workflow import Action, Status, apply
from shared.workcalendar import CalendarRangeError


async def expire_grabs(session: AsyncSession, ctx: DispatchContext, now: datetime) -> int:
    """督着办: pooled dispatches nobody grabbed in time go to the first-ranked eligible
    department, marked supervised, with their clocks starting now."""

    async def fetch(limit: int, seen: list[Any]) -> Sequence[Any]:
        query = (
            select(col(Dispatch.dispatch_id))
            .where(
                col(Dispatch.status) == Status.PENDING_GRAB.value, col(Dispatch.grab_until) <= now
            )
            .order_by(col(Dispatch.grab_until))
            .limit(limit)
        )
        if seen:
            query = query.where(col(Dispatch.dispatch_id).not_in(seen))
        return (await session.execute(query)).scalars().all()

    async def act(org: OrgChart, dispatch_id: str) -> bool | None:
        return await _assign_expired(session, ctx, org, dispatch_id, now)

    return await in_pages(session, ctx, fetch, key=lambda dispatch_id: dispatch_id, act=act)


async def _assign_expired(
    session: AsyncSession, ctx: DispatchContext, org: OrgChart, dispatch_id: str, now: datetime
) -> bool | None:
    """Assign one expired pooled dispatch: True when done, False when it was no longer in the
    pool, None when its deadlines cannot be computed (skipped)."""
    offers = (
        (
            await session.execute(
                select(col(GrabOffer.department_code))
                .where(col(GrabOffer.dispatch_id) == dispatch_id)
                .order_by(col(GrabOffer.rank))
            )
        )
        .scalars()
        .all()
    )
    unit = next((org.departments[c] for c in offers if c in org.departments), None)
    if unit is None:
        unit = org.supervised_pool  # every offered unit was deactivated meanwhile
    d = await session.get(Dispatch, dispatch_id)
    if d is None or d.status != Status.PENDING_GRAB.value:
        return False
    try:  # before anything is written: a refused deadline leaves the dispatch as it was
        due = ctx.deadlines.of(ctx.profiles.get(d.time_limit_profile), now)
    except CalendarRangeError as exc:
        ctx.deadlines.note_scheduler_skip("assign", dispatch_id, exc)
        return None
    state = apply(state_of(d), Action.ASSIGN)  # → assigned, supervised (督着办)
    claimed = await session.execute(
        update(Dispatch)
        .where(
            col(Dispatch.dispatch_id) == dispatch_id,
            col(Dispatch.status) == Status.PENDING_GRAB.value,
        )
        .values(
            status=state.status.value,
            supervised=state.supervised,
            department_code=unit.code,
            mode="supervised",
            version=col(Dispatch.version) + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if rows_matched(claimed) != 1:
        return False  # grabbed, or assigned by another replica, since we looked
    await session.refresh(d)
    clocks = start_clocks(session, ctx, d, now, due=due)
    session.add(
        DispatchAction(
            dispatch_id=d.dispatch_id,
            ticket_id=d.ticket_id,
            action=Action.ASSIGN.value,
            actor_role="system",
            actor_subject="scheduler",
            from_status=Status.PENDING_GRAB.value,
            to_status=d.status,
            note="nobody grabbed it in time: assigned and supervised (督着办)",
            data={"department": unit.code},
            at=now,
        )
    )
    await ctx.outbox.add(session, assigned_event(d, unit, clocks, mode="supervised"))
    if ctx.metrics is not None:
        ctx.metrics.grabs_expired.inc()
    return True
