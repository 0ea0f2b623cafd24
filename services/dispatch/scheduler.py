"""The scheduler: missed clocks escalate up the tiers, unclaimed grab offers are assigned.

All of its state is in the database — a clock's ``next_escalation_at`` and ``escalation_level``,
a pooled dispatch's ``grab_until`` — so a restart, a crash or a second replica changes nothing:
each pass asks the database what is due *now* (the injected clock) and claims each step with a
conditional UPDATE (``WHERE escalation_level = <what I read>`` / ``WHERE status =
'pending_grab'``). The unique key on ``escalations(dispatch_id, clock, level)`` backs that up, so
every step up happens, and emits its event, exactly once.

A missed clock escalates to level 1 (the nearest centre over the department) when it runs out,
then one level further each time its own duration passes again (village → town → district →
city); past the city centre it escalates once more with no target — the city leadership — and
stops.

A step whose deadline the calendar refuses to compute (``beyond_data: raise`` and a date past
the calendar's data) is skipped, logged and counted (``fengqiao_dispatch_scheduler_skipped_total``)
and tried again on every pass until the operators complete the calendar; the steps behind it in
the batch go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatch.clocks import ClockName
from services.dispatch.context import DispatchContext
from services.dispatch.models import (
    Dispatch,
    DispatchAction,
    DispatchClock,
    Escalation,
    GrabOffer,
)
from services.dispatch.orgchart import OrgChart, UnknownDepartment
from services.dispatch.service import _assigned, _start_clocks, state_of
from services.dispatch.workflow import OPEN, Action, Status, apply, escalation_target
from shared.events.dispatch import DispatchEscalated
from shared.workcalendar import CalendarRangeError

log = logging.getLogger(__name__)

D: Any = Dispatch
C: Any = DispatchClock
G: Any = GrabOffer

_OPEN = [s.value for s in OPEN]
# Pages of steps one pass looks at, at most: a further page is read only when steps of the one
# before were skipped (their deadlines beyond the calendar), so skipped steps at the head of the
# queue cannot hold up every other one.
_MAX_PAGES = 10


@dataclass
class PassResult:
    """What one scheduler pass did."""

    escalated: int = 0
    assigned: int = 0


async def run_pass(ctx: DispatchContext, sessions: async_sessionmaker[AsyncSession]) -> PassResult:
    """One pass at the injected clock's now: expire grab windows, then escalate missed clocks."""
    now = ctx.now()
    result = PassResult()
    async with sessions() as session, session.begin():
        result.assigned = await expire_grabs(session, ctx, now)
    async with sessions() as session, session.begin():
        result.escalated = await escalate_missed(session, ctx, now)
    return result


async def expire_grabs(session: AsyncSession, ctx: DispatchContext, now: datetime) -> int:
    """督着办: pooled dispatches nobody grabbed in time go to the first-ranked eligible
    department, marked supervised, with their clocks starting now."""

    async def fetch(limit: int, seen: list[Any]) -> Sequence[Any]:
        query = (
            select(D.dispatch_id)
            .where(D.status == Status.PENDING_GRAB.value, D.grab_until <= now)
            .order_by(D.grab_until)
            .limit(limit)
        )
        if seen:
            query = query.where(D.dispatch_id.not_in(seen))
        return (await session.execute(query)).scalars().all()

    async def act(org: OrgChart, dispatch_id: str) -> bool | None:
        return await _assign_expired(session, ctx, org, dispatch_id, now)

    return await _in_pages(session, ctx, fetch, key=lambda dispatch_id: dispatch_id, act=act)


async def _in_pages(
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
        org = await ctx.organisation(session)
        skipped = 0
        for item in items:
            outcome = await act(org, item)
            done += outcome is True
            skipped += outcome is None
        if not skipped or done >= batch:
            break
    return done


async def _assign_expired(
    session: AsyncSession, ctx: DispatchContext, org: OrgChart, dispatch_id: str, now: datetime
) -> bool | None:
    """Assign one expired pooled dispatch: True when done, False when it was no longer in the
    pool, None when its deadlines cannot be computed (skipped)."""
    offers = (
        (
            await session.execute(
                select(G.department_code).where(G.dispatch_id == dispatch_id).order_by(G.rank)
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
        due = ctx.deadlines(ctx.profiles.get(d.time_limit_profile), now)
    except CalendarRangeError as exc:
        ctx.note_scheduler_skip("assign", dispatch_id, exc)
        return None
    state = apply(state_of(d), Action.ASSIGN)  # → assigned, supervised (督着办)
    claimed = await session.execute(
        update(Dispatch)
        .where(D.dispatch_id == dispatch_id, D.status == Status.PENDING_GRAB.value)
        .values(
            status=state.status.value,
            supervised=state.supervised,
            department_code=unit.code,
            mode="supervised",
            version=D.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if _rows(claimed) != 1:
        return False  # grabbed, or assigned by another replica, since we looked
    await session.refresh(d)
    clocks = _start_clocks(session, ctx, d, now, due=due)
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
    await ctx.outbox.add(session, _assigned(d, unit, clocks, mode="supervised"))
    if ctx.metrics is not None:
        ctx.metrics.grabs_expired.inc()
    return True


async def escalate_missed(session: AsyncSession, ctx: DispatchContext, now: datetime) -> int:
    """Escalate every running clock of an open dispatch whose next escalation time has passed,
    one level per clock per pass, each step claimed exactly once."""

    async def fetch(limit: int, seen: list[Any]) -> Sequence[Any]:
        query = (
            select(
                C.dispatch_id,
                C.clock,
                C.escalation_level,
                C.due_at,
                C.next_escalation_at,
                D.department_code,
                D.ticket_id,
                D.time_limit_profile,
            )
            .join(Dispatch, D.dispatch_id == C.dispatch_id)
            .where(
                C.stopped_at.is_(None),
                C.next_escalation_at.is_not(None),
                C.next_escalation_at <= now,
                D.status.in_(_OPEN),
                D.department_code.is_not(None),
            )
            .order_by(C.next_escalation_at)
            .limit(limit)
        )
        if seen:  # one step per clock per pass, and past the clocks skipped on this pass
            query = query.where(tuple_(C.dispatch_id, C.clock).not_in(seen))
        return (await session.execute(query)).all()

    async def act(org: OrgChart, row: Any) -> bool | None:
        return await _escalate(session, ctx, org, row, now)

    done = await _in_pages(
        session, ctx, fetch, key=lambda row: (row.dispatch_id, row.clock), act=act
    )
    await session.flush()
    return done


async def _escalate(
    session: AsyncSession, ctx: DispatchContext, org: OrgChart, row: Any, now: datetime
) -> bool | None:
    """Take one escalation step: True when taken, False when another replica took it or the
    clock stopped meanwhile, None when its next step cannot be computed (skipped)."""
    level = row.escalation_level + 1
    clock = ClockName(row.clock)
    try:
        target = escalation_target(row.department_code, level, org)
    except UnknownDepartment:
        target = None  # deactivated since: straight to the top
    # Past the top, stop; otherwise escalate again after the clock's own duration.
    following = None
    if target is not None:
        profile = ctx.profiles.get(row.time_limit_profile)
        if clock in profile.clocks:
            try:  # before anything is written: a refused step leaves the clock as it was
                following = ctx.next_step(profile, clock, row.next_escalation_at)
            except CalendarRangeError as exc:
                ctx.note_scheduler_skip("escalate", f"{row.dispatch_id}/{row.clock}", exc)
                return None
    claimed = await session.execute(
        update(DispatchClock)
        .where(
            C.dispatch_id == row.dispatch_id,
            C.clock == row.clock,
            C.escalation_level == row.escalation_level,
            C.stopped_at.is_(None),
        )
        .values(escalation_level=level, next_escalation_at=following)
    )
    if _rows(claimed) != 1:
        return False  # another replica took this step, or the clock just stopped
    session.add(
        Escalation(
            dispatch_id=row.dispatch_id,
            ticket_id=row.ticket_id,
            clock=row.clock,
            level=level,
            department_code=row.department_code,
            target_department_code=target.code if target else None,
            due_at=row.due_at,
            escalated_at=now,
        )
    )
    await session.execute(
        update(Dispatch)
        .where(D.dispatch_id == row.dispatch_id, D.escalation_level < level)
        .values(escalation_level=level)
    )
    session.add(
        DispatchAction(
            dispatch_id=row.dispatch_id,
            ticket_id=row.ticket_id,
            action=Action.ESCALATE.value,
            actor_role="system",
            actor_subject="scheduler",
            note=f"{row.clock} missed (due {row.due_at.isoformat()}): escalated to "
            + (target.code if target else "the city leadership"),
            data={"clock": row.clock, "level": level},
            at=now,
        )
    )
    await ctx.outbox.add(
        session,
        DispatchEscalated(
            ticket_id=row.ticket_id,
            dispatch_id=row.dispatch_id,
            department_code=row.department_code,
            clock=row.clock,
            level=level,
            target_department_code=target.code if target else None,
            due_at=row.due_at,
        ),
    )
    if ctx.metrics is not None:
        ctx.metrics.escalations.labels(row.clock).inc()
    return True


def _rows(result: Any) -> int:
    """Rows an UPDATE matched (a CursorResult's rowcount)."""
    return int(result.rowcount)


async def run(ctx: DispatchContext) -> None:
    """The background loop: a pass every ``scheduler_interval_ms``, until cancelled; a failed
    pass is logged, counted and retried on the next one."""
    interval = ctx.settings.scheduler_interval_ms / 1000
    while True:
        try:
            result = await run_pass(ctx, ctx.sessions)
            if result.escalated or result.assigned:
                ctx.runtime.notify()
            ctx.update_calendar_gauge()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduler pass failed; retrying")
            if ctx.metrics is not None:
                ctx.metrics.scheduler_errors.inc()
        await asyncio.sleep(interval)
