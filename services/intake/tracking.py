"""Following each ticket's life through dispatch's and mediation's events: the dispatch states,
the history steps and the status the hotline and Open311 show (intake's event handlers call it)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import lifecycle
from services.intake.models import (
    DISPATCHES,
    HISTORY,
    TICKETS,
)
from shared.events.base import Event

log = logging.getLogger(__name__)


async def apply_lifecycle(*, session: AsyncSession, event: Event) -> None:
    """Record what a dispatch or mediation event means for its ticket: the dispatch's state, a
    history step, and the ticket's status (a ticket intake never took gets the history only)."""
    step = lifecycle.step_for(event)
    if step is None:
        return
    d = DISPATCHES
    at = event.occurred_at
    for change in step.changes:
        current = (
            await session.execute(
                select(d.c.dispatch_id).where(d.c.dispatch_id == change.dispatch_id)
            )
        ).first()
        values: dict[str, Any] = {"updated_at": at}
        if change.state is not None:
            values["state"] = change.state
        if change.department_code is not None:
            values["department_code"] = change.department_code
        if change.due_at is not None:
            values["due_at"] = change.due_at
        if change.resolved is not None:
            values["resolved"] = change.resolved
        if current is None:
            await session.execute(
                d.insert().values(
                    dispatch_id=change.dispatch_id,
                    ticket_id=step.ticket_id,
                    state=change.state or "assigned",
                    **{k: v for k, v in values.items() if k != "state"},
                )
            )
        else:
            await session.execute(
                update(d).where(d.c.dispatch_id == change.dispatch_id).values(**values)
            )
    dispatches = (
        await session.execute(
            select(
                d.c.dispatch_id, d.c.state, d.c.department_code, d.c.due_at, d.c.updated_at
            ).where(d.c.ticket_id == step.ticket_id)
        )
    ).all()
    status = lifecycle.ticket_status((r.dispatch_id, r.state) for r in dispatches)
    open_rows = [
        r
        for r in dispatches
        if r.state in lifecycle.OPEN_STATES and not r.dispatch_id.startswith(lifecycle.CASE_PREFIX)
    ]
    latest = max(open_rows, key=lambda r: r.updated_at, default=None)
    dues = [r.due_at for r in open_rows if r.due_at is not None]
    await session.execute(
        update(TICKETS)
        .where(TICKETS.c.ticket_id == step.ticket_id)
        .values(
            status=status,
            status_at=at,
            department_code=latest.department_code if latest is not None else step.department_code,
            due_at=min(dues) if dues else None,
            **(
                {"time_limit_profile": step.time_limit_profile}
                if step.time_limit_profile is not None
                else {}
            ),
        )
    )
    await session.execute(
        HISTORY.insert().values(
            ticket_id=step.ticket_id,
            event_id=str(event.event_id),
            event_type=event.event_type,
            occurred_at=at,
            dispatch_id=step.dispatch_id,
            department_code=step.department_code,
            note=step.note,
            status=status,
        )
    )
