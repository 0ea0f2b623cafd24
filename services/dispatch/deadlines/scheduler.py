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
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.escalation import escalate_missed
from services.dispatch.deadlines.grab_expiry import expire_grabs

log = logging.getLogger(__name__)


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


async def run(ctx: DispatchContext) -> None:
    """The background loop: a pass every ``scheduler_interval_ms``, until cancelled; a failed
    pass is logged, counted and retried on the next one."""
    interval = ctx.settings.scheduler_interval_ms / 1000
    while True:
        try:
            result = await run_pass(ctx, ctx.sessions)
            if result.escalated or result.assigned:
                ctx.runtime.notify()
            ctx.deadlines.update_calendar_gauge()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduler pass failed; retrying")
            if ctx.metrics is not None:
                ctx.metrics.scheduler_errors.inc()
        await asyncio.sleep(interval)
