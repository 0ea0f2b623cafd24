"""Escalation: a clock that runs out escalates to level 1 (the nearest centre over the
department), then one level further each time its own duration passes again (village → town →
district → city); past the city centre once more with no target — the city leadership — and it
stops. Each step is claimed with a conditional UPDATE on the level read, and backed by the
unique key on ``escalations(dispatch_id, clock, level)``: every step happens, and emits its
event, exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.paging import in_pages, rows_matched
from services.dispatch.deadlines.profiles import ClockName
from services.dispatch.models import Dispatch, DispatchAction, DispatchClock, Escalation
from services.dispatch.organisation.chart import OrgChart, UnknownDepartment
from services.dispatch.workflow import OPEN, Action, escalation_target
from shared.events.dispatch import DispatchEscalated
from shared.workcalendar import CalendarRangeError

_OPEN = [s.value for s in OPEN]


async def escalate_missed(session: AsyncSession, ctx: DispatchContext, now: datetime) -> int:
    """Escalate every running clock of an open dispatch whose next escalation time has passed,
    one level per clock per pass, each step claimed exactly once."""

    async def fetch(limit: int, seen: list[Any]) -> Sequence[Any]:
        query = (
            select(
                col(DispatchClock.dispatch_id),
                col(DispatchClock.clock),
                col(DispatchClock.escalation_level),
                col(DispatchClock.due_at),
                col(DispatchClock.next_escalation_at),
                col(Dispatch.department_code),
                col(Dispatch.ticket_id),
                col(Dispatch.time_limit_profile),
            )
            .join(Dispatch, col(Dispatch.dispatch_id) == col(DispatchClock.dispatch_id))
            .where(
                col(DispatchClock.stopped_at).is_(None),
                col(DispatchClock.next_escalation_at).is_not(None),
                col(DispatchClock.next_escalation_at) <= now,
                col(Dispatch.status).in_(_OPEN),
                col(Dispatch.department_code).is_not(None),
            )
            .order_by(col(DispatchClock.next_escalation_at))
            .limit(limit)
        )
        if seen:  # one step per clock per pass, and past the clocks skipped on this pass
            query = query.where(
                tuple_(col(DispatchClock.dispatch_id), col(DispatchClock.clock)).not_in(seen)
            )
        return (await session.execute(query)).all()

    async def act(org: OrgChart, row: Any) -> bool | None:
        return await _escalate(session, ctx, org, row, now)

    done = await in_pages(
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
                following = ctx.deadlines.next_step(profile, clock, row.next_escalation_at)
            except CalendarRangeError as exc:
                ctx.deadlines.note_scheduler_skip("escalate", f"{row.dispatch_id}/{row.clock}", exc)
                return None
    # The dispatch row first, then its clock: the order every action takes them in. The other
    # order deadlocks (PostgreSQL) with an action stopping this very clock; this way the step
    # waits for the action and then finds the clock stopped.
    await session.execute(
        select(col(Dispatch.dispatch_id))
        .where(col(Dispatch.dispatch_id) == row.dispatch_id)
        .with_for_update()
    )
    claimed = await session.execute(
        update(DispatchClock)
        .where(
            col(DispatchClock.dispatch_id) == row.dispatch_id,
            col(DispatchClock.clock) == row.clock,
            col(DispatchClock.escalation_level) == row.escalation_level,
            col(DispatchClock.stopped_at).is_(None),
        )
        .values(escalation_level=level, next_escalation_at=following)
    )
    if rows_matched(claimed) != 1:
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
        .where(col(Dispatch.dispatch_id) == row.dispatch_id, col(Dispatch.escalation_level) < level)
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
