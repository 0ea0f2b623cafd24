"""The background loop: cases over their level's time limit go up a level; cases open too long
go on the backlog board.

Its state is in the database (``cases.due_at``, ``cases.board_due_at``, the board's unique keys),
so a restart or a second replica changes nothing: each pass asks what is due at the injected
clock's now and moves each case in its own transaction, under a row lock, re-checking that it is
still due — a case escalates once per limit, however many passes see it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import col

from services.mediation import board
from services.mediation.context import MediationContext
from services.mediation.lifecycle import MEDIATING, OPEN, Status
from services.mediation.models import BoardPost, Case
from services.mediation.moves import escalate
from services.mediation.service import SYSTEM

log = logging.getLogger(__name__)

_MEDIATING = [s.value for s in MEDIATING]
_OPEN = [s.value for s in OPEN]


@dataclass
class PassResult:
    """What one pass did."""

    escalated: int = 0
    posted: int = 0


async def run_pass(ctx: MediationContext) -> PassResult:
    """One pass at the clock's now: escalate overdue cases, post long-open ones."""
    now = ctx.now()
    batch = ctx.settings.escalation_batch_size
    result = PassResult()
    async with ctx.sessions() as session:
        overdue = list(
            (
                await session.execute(
                    select(col(Case.case_id))
                    .where(
                        col(Case.status).in_(_MEDIATING),
                        col(Case.due_at) <= now,
                        col(Case.level) != "city",
                    )
                    .order_by(col(Case.due_at))
                    .limit(batch)
                )
            ).scalars()
        )
        stale = list(
            (
                await session.execute(
                    select(col(Case.case_id))
                    .outerjoin(BoardPost, col(BoardPost.case_id) == col(Case.case_id))
                    .where(
                        col(Case.status).in_(_OPEN),
                        col(Case.board_due_at) <= now,
                        col(BoardPost.board_id).is_(None),
                    )
                    .limit(batch)
                )
            ).scalars()
        )
    for case_id in overdue:
        async with ctx.sessions() as session, session.begin():
            case = await session.get(Case, case_id, with_for_update=True)
            if (
                case is None
                or Status(case.status) not in MEDIATING
                or case.due_at is None
                or case.due_at > now
                or case.level == "city"
            ):
                continue  # moved meanwhile
            await escalate(session=session, ctx=ctx, case=case, reason="overdue", actor=SYSTEM)
            result.escalated += 1
    for case_id in stale:
        async with ctx.sessions() as session, session.begin():
            case = await session.get(Case, case_id)
            if case is None:
                continue
            days = ctx.settings.board_open_working_days
            if await board.post_case(
                session=session, ctx=ctx, case=case, reason=f"open more than {days} working days"
            ):
                result.posted += 1
    return result


async def run(ctx: MediationContext) -> None:
    """A pass every ``escalation_interval_ms`` until cancelled; a failed pass is logged and
    retried on the next one."""
    interval = ctx.settings.escalation_interval_ms / 1000
    while True:
        try:
            result = await run_pass(ctx)
            if result.escalated or result.posted:
                ctx.runtime.notify()
            if ctx.metrics is not None:
                ctx.metrics.loop_moves.labels("escalated").inc(result.escalated)
                ctx.metrics.loop_moves.labels("posted").inc(result.posted)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("mediation escalation pass failed; retrying")
            if ctx.metrics is not None:
                ctx.metrics.loop_errors.inc()
        await asyncio.sleep(interval)
