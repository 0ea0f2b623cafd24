"""Evaluation's write side: each event goes into the ledger once, then its ticket (or case) is
refolded from the whole ledger and the cells move by the difference.

Handlers write through the consumer's session and never commit. Idempotent: an event id the
ledger holds changes nothing, and a replay under a new id folds to the same facts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.evaluation import cells
from services.evaluation.facts import fold_case, fold_ticket
from services.evaluation.models import (
    CELL_COLUMNS,
    DIMENSIONS,
    CaseFact,
    DispatchFact,
    Summary,
    TicketFact,
    cells_table,
    contributions_table,
    ledger_table,
)
from shared.events import mediation as m
from shared.events.base import Event, registry
from shared.workcalendar import WorkCalendar

TICKET, CASE = "T:", "C:"


def fact_key(event: Event) -> str | None:
    """The ledger key of the fact an event is about: its mediation case, else its ticket."""
    if isinstance(event, m._MediationEvent):
        return CASE + event.case_id
    ticket_id = getattr(event, "ticket_id", None)
    return TICKET + ticket_id if ticket_id else None


def _insert(session: AsyncSession, table: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def record(*, session: AsyncSession, event: Event, calendar: WorkCalendar) -> None:
    """Fold one event: into the ledger once, then refold its fact and move the cells."""
    key = fact_key(event)
    if key is None:
        return
    stored = await session.execute(
        _insert(session, ledger_table)
        .values(
            event_id=str(event.event_id),
            fact_key=key,
            event_type=event.cloudevent_type(),
            occurred_at=event.occurred_at,
            payload=event.model_dump_json(),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    if stored.rowcount == 0:  # type: ignore[attr-defined]
        return  # this very event is folded already
    await refold(session=session, keys=[key], calendar=calendar)


async def ledger_events(session: AsyncSession, key: str) -> list[Event]:
    """Every event the ledger holds for one fact."""
    classes = registry()
    rows = await session.execute(
        select(ledger_table.c.event_type, ledger_table.c.payload).where(
            ledger_table.c.fact_key == key
        )
    )
    return [classes[t].model_validate_json(p) for t, p in rows]


async def refold(*, session: AsyncSession, keys: Iterable[str], calendar: WorkCalendar) -> None:
    """Refold the facts of ``keys`` from their ledgers and move the cells by the difference."""
    for key in keys:
        events = await ledger_events(session, key)
        if key.startswith(CASE):
            case_fact = fold_case(key[len(CASE) :], events)
            await upsert(session, CaseFact, [case_fact])
            shares = cells.case_shares(case_fact)
        else:
            fold = fold_ticket(key[len(TICKET) :], events, calendar=calendar)
            await upsert(session, TicketFact, [fold.ticket])
            await upsert(session, DispatchFact, fold.dispatches)
            shares = cells.ticket_shares(fold)
        await move_cells(session=session, key=key, shares=shares)


async def upsert(session: AsyncSession, model: Any, rows: Sequence[Any]) -> None:
    """Write facts whole, inserted or replaced, in one statement (no read first)."""
    if not rows:
        return
    table = model.__table__
    (key,) = (c.name for c in table.primary_key.columns)
    stmt = _insert(session, table)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[key],
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != key},
        ),
        [row.model_dump() for row in rows],
    )


async def move_cells(*, session: AsyncSession, key: str, shares: Sequence[cells.Share]) -> None:
    """Take the fact's old contribution away from the cells and add the new one."""
    old = (
        await session.execute(
            select(contributions_table.c.cells).where(contributions_table.c.fact_key == key)
        )
    ).scalar_one_or_none() or []
    delta: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for share in cells.from_stored(old):
        for name, value in share.counters.items():
            delta[share.cell_key][name] -= value
    new_cells: dict[str, cells.Share] = {}
    for share in shares:
        new_cells[share.cell_key] = share
        for name, value in share.counters.items():
            delta[share.cell_key][name] += value
    await apply_delta(session=session, delta=delta, new_cells=new_cells)
    contribution = cells.stored(
        (s.period_start, s.dims, s.counters) for s in shares if s.grain == "day"
    )
    await session.execute(
        _insert(session, contributions_table)
        .values(fact_key=key, cells=contribution)
        .on_conflict_do_update(index_elements=["fact_key"], set_={"cells": contribution})
    )


async def apply_delta(
    *,
    session: AsyncSession,
    delta: dict[str, dict[str, int]],
    new_cells: dict[str, cells.Share],
) -> None:
    """Add counter differences to cells (creating the ones new shares name)."""
    c = cells_table.c
    inserts: list[dict[str, Any]] = []
    emptied: list[str] = []
    for cell_key, changes in delta.items():
        changes = {k: v for k, v in changes.items() if v}
        if not changes:
            continue
        share = new_cells.get(cell_key)
        if share is None:
            await session.execute(
                update(cells_table)
                .where(c.cell_key == cell_key)
                .values({name: c[name] + value for name, value in changes.items()})
            )
            emptied.append(cell_key)
            continue
        row: dict[str, Any] = dict.fromkeys(CELL_COLUMNS, 0)
        row.update(changes)
        row.update(zip(DIMENSIONS, share.dims, strict=True))
        row.update(cell_key=cell_key, grain=share.grain, period_start=share.period_start)
        inserts.append(row)
    if inserts:
        stmt = _insert(session, cells_table)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["cell_key"],
                set_={name: c[name] + stmt.excluded[name] for name in CELL_COLUMNS},
            ),
            inserts,
        )
    if emptied:
        # A cell only a fact's old share named may now be all zeros: drop it, so the cells are
        # exactly those a rebuild from scratch writes.
        await session.execute(
            delete(cells_table).where(
                c.cell_key.in_(emptied), *(c[name] == 0 for name in CELL_COLUMNS)
            )
        )


async def summary(*, session: AsyncSession) -> Summary:
    """Counts of received, dispatched, awaiting and called-back tickets.

    Each is a count of tickets in one state, never a difference of two counts: events travel
    on different topics, so a ticket's assignment may be counted before its receipt."""
    received_at, dispatched_at = col(TicketFact.received_at), col(TicketFact.dispatched_at)
    awaiting = and_(received_at.is_not(None), dispatched_at.is_(None))
    row = (
        await session.execute(
            select(
                func.count(received_at),
                func.count(dispatched_at),
                func.count(case((awaiting, 1))),
                func.count(col(TicketFact.satisfaction)),
            ).where(col(TicketFact.kind) == "appeal")
        )
    ).one()
    received, dispatched, awaiting_dispatch, feedback = (int(v) for v in row)
    return Summary(
        received=received,
        dispatched=dispatched,
        awaiting_dispatch=awaiting_dispatch,
        feedback=feedback,
    )
