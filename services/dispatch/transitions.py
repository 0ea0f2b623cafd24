"""One workflow action applied to a stored dispatch: load it ``FOR UPDATE`` (two concurrent
actions on one dispatch serialize and the loser sees the new status), authorize the caller
(``access``), apply the state machine (``workflow.apply``; IllegalTransition → 409 naming the
status), stop the clocks the action stops, and write the audit row — all in the caller's
transaction. Every sub-domain module (actions, grab, returns, whistle, closing) builds on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.access import authorize
from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.rows import any_late, stop_clocks
from services.dispatch.models import Dispatch, DispatchAction, DispatchClock, GrabOffer
from services.dispatch.organisation.chart import OrgChart
from services.dispatch.staging import Writer, new_row
from services.dispatch.workflow import ACTOR, TERMINAL, Action, DispatchState, Status, apply
from shared.auth import Principal, Role
from shared.errors import NotFound

SYSTEM = Principal(Role.OPERATOR, "system")


def state_of(d: Dispatch) -> DispatchState:
    """The state machine's view of a dispatch row."""
    return DispatchState(
        status=Status(d.status),
        resume=Status(d.resume_status) if d.resume_status else None,
        supervised=d.supervised,
        supervision_count=d.supervision_count,
        focused=d.focused,
        escalation_level=d.escalation_level,
        whistles=d.whistles,
        extensions_granted=d.extensions_granted,
    )


def store_state(d: Dispatch, s: DispatchState, now: datetime) -> None:
    """Write a state back to its row (a new version, closed once terminal)."""
    # escalation_level belongs to the scheduler, which updates it in SQL: never written here.
    d.status = s.status.value
    d.resume_status = s.resume.value if s.resume else None
    d.supervised = s.supervised
    d.supervision_count = s.supervision_count
    d.focused = s.focused
    d.whistles = s.whistles
    d.extensions_granted = s.extensions_granted
    d.version += 1
    d.updated_at = now
    if s.status in TERMINAL and d.closed_at is None:
        d.closed_at = now


def _actor_fields(principal: Principal) -> dict[str, Any]:
    system = principal.role is Role.OPERATOR and principal.subject.startswith(
        ("system", "mediation:")
    )
    return {
        "actor_role": "system" if system else principal.role.value,
        "actor_subject": principal.subject,
        "actor_department": principal.department_code,
    }


def record(
    session: Writer,
    d: Dispatch,
    action: str,
    principal: Principal,
    *,
    before: str | None,
    after: str | None,
    now: datetime,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Write one row of a dispatch's audit trail."""
    new_row(
        session,
        DispatchAction,
        dispatch_id=d.dispatch_id,
        ticket_id=d.ticket_id,
        action=action,
        from_status=before,
        to_status=after,
        note=note,
        data=data or {},
        at=now,
        **_actor_fields(principal),
    )


async def load(session: AsyncSession, dispatch_id: str, *, lock: bool = True) -> Dispatch:
    """A dispatch by id (locked for update by default); NotFound otherwise."""
    query = select(Dispatch).where(col(Dispatch.dispatch_id) == dispatch_id)
    if lock:
        query = query.with_for_update()
    d = (await session.execute(query)).scalars().first()
    if d is None:
        raise NotFound(f"no dispatch {dispatch_id!r}")
    return d


async def offers_of(session: AsyncSession, dispatch_id: str) -> list[str]:
    """The departments a pooled dispatch is offered to, in rank order."""
    rows = await session.execute(
        select(col(GrabOffer.department_code))
        .where(col(GrabOffer.dispatch_id) == dispatch_id)
        .order_by(col(GrabOffer.rank))
    )
    return list(rows.scalars())


def department_of(d: Dispatch) -> str:
    """The department a dispatch in hand belongs to (never a pooled one)."""
    assert d.department_code is not None
    return d.department_code


@dataclass
class Step:
    """One applied transition: the dispatch, its states before and after, and context."""

    d: Dispatch
    before: DispatchState
    after: DispatchState
    org: OrgChart
    now: datetime
    stopped: dict[str, DispatchClock]  # the clocks the action stopped, by name

    @property
    def late(self) -> bool:
        """True when a clock the action stopped had already run out."""
        return any_late(self.stopped)

    @property
    def department(self) -> str:
        """The dispatch's department."""
        return department_of(self.d)


async def step(
    session: AsyncSession,
    ctx: DispatchContext,
    *,
    dispatch_id: str,
    action: Action,
    principal: Principal,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> Step:
    """Authorize, apply the state machine, stop clocks, and write the audit row."""
    d = await load(session, dispatch_id)
    org = await ctx.org.chart(session)
    offered = await offers_of(session, dispatch_id) if d.department_code is None else []
    authorize(principal, d, action, ACTOR[action], org, offered=offered)
    before = state_of(d)
    after = apply(before, action)
    now = ctx.now()
    store_state(d, after, now)
    stopped = await stop_clocks(session, d, action, now)
    record(
        session,
        d,
        action.value,
        principal,
        before=before.status.value,
        after=after.status.value,
        now=now,
        note=note,
        data=data,
    )
    if ctx.metrics is not None:
        ctx.metrics.actions.labels(action.value).inc()
    return Step(d, before, after, org, now, stopped)
