"""Evaluation's write side: each event goes into the ledger once, then its ticket (or case) is
refolded from the whole ledger and the cells move by the difference.

Handlers write through the consumer's session and never commit. Idempotent: an event id the
ledger holds changes nothing, and a replay under a new id folds to the same facts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, select, update
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
from shared import bulk
from shared.bulk import Draft, OnConflict, chunks
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


async def record(*, session: AsyncSession, event: Event, calendar: WorkCalendar) -> None:
    """Fold one event: into the ledger once, then refold its fact and move the cells."""
    await record_many(session=session, events=[event], calendar=calendar)


async def record_many(
    *, session: AsyncSession, events: Sequence[Event], calendar: WorkCalendar
) -> None:
    """Fold a batch of events: the ledger rows in one statement (an event id the ledger holds
    is skipped), then each touched fact refolded once, however many of its events came."""
    rows = [
        {
            "event_id": str(event.event_id),
            "fact_key": key,
            "event_type": event.cloudevent_type(),
            "occurred_at": event.occurred_at,
            "payload": event.model_dump_json(),
        }
        for event in events
        if (key := fact_key(event)) is not None
    ]
    keys = set(
        await bulk.upsert(
            session,
            ledger_table,
            rows,
            key=["event_id"],
            on_conflict=OnConflict.NOTHING,
            returning="fact_key",
        )
    )
    if keys:  # else every event was folded already
        await refold(session=session, keys=sorted(keys), calendar=calendar)


async def ledger_events_of(session: AsyncSession, keys: Sequence[str]) -> dict[str, list[Event]]:
    """Every event the ledger holds for each of ``keys``, by key."""
    classes = registry()
    found: dict[str, list[Event]] = defaultdict(list)
    for chunk in chunks(keys):
        rows = await session.execute(
            select(
                ledger_table.c.fact_key, ledger_table.c.event_type, ledger_table.c.payload
            ).where(ledger_table.c.fact_key.in_(chunk))
        )
        for key, event_type, payload in rows:
            found[key].append(classes[event_type].model_validate_json(payload))
    return found


async def refold(*, session: AsyncSession, keys: Iterable[str], calendar: WorkCalendar) -> None:
    """Refold the facts of ``keys`` from their ledgers and move the cells by the difference:
    a few statements for all of them."""
    keys = list(keys)
    ledgers = await ledger_events_of(session, keys)
    tickets: list[Draft] = []
    dispatches: list[Draft] = []
    cases: list[CaseFact] = []
    shares: dict[str, Sequence[cells.Share]] = {}
    for key in keys:
        events = ledgers.get(key, [])
        if key.startswith(CASE):
            case_fact = fold_case(key[len(CASE) :], events)
            cases.append(case_fact)
            shares[key] = cells.case_shares(case_fact)
        else:
            fold = fold_ticket(key[len(TICKET) :], events, calendar=calendar)
            tickets.append(fold.draft)
            dispatches.extend(fold.dispatch_drafts)
            shares[key] = cells.ticket_shares(fold)
    await upsert(session, TicketFact, tickets)
    await upsert(session, DispatchFact, dispatches)
    await upsert(session, CaseFact, cases)
    await move_cells(session=session, shares=shares)


async def upsert(session: AsyncSession, model: Any, rows: Sequence[Any]) -> None:
    """Write facts whole, inserted or replaced, in one statement (no read first)."""
    table = model.__table__
    (key,) = (c.name for c in table.primary_key.columns)
    await bulk.upsert(
        session,
        table,
        [row.model_dump() for row in rows],
        key=[key],
        on_conflict=OnConflict.REPLACE,
    )


async def move_cells(*, session: AsyncSession, shares: Mapping[str, Sequence[cells.Share]]) -> None:
    """Take each fact's old contribution away from the cells and add its new one: the
    differences of all the facts summed, then written once."""
    keys = list(shares)
    old: dict[str, list[Any]] = {}
    for chunk in chunks(keys):
        rows = await session.execute(
            select(contributions_table.c.fact_key, contributions_table.c.cells).where(
                contributions_table.c.fact_key.in_(chunk)
            )
        )
        old.update((key, stored) for key, stored in rows)
    delta: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    new_cells: dict[str, cells.Share] = {}
    for key in keys:
        for share in cells.from_stored(old.get(key) or ()):
            for name, value in share.counters.items():
                delta[share.cell_key][name] -= value
        for share in shares[key]:
            new_cells[share.cell_key] = share
            for name, value in share.counters.items():
                delta[share.cell_key][name] += value
    await apply_delta(session=session, delta=delta, new_cells=new_cells)
    contributions = [
        {
            "fact_key": key,
            "cells": cells.stored(
                (s.period_start, s.dims, s.counters) for s in shares[key] if s.grain == "day"
            ),
        }
        for key in keys
    ]
    await bulk.upsert(
        session,
        contributions_table,
        contributions,
        key=["fact_key"],
        on_conflict=OnConflict.REPLACE,
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
    updates: list[dict[str, Any]] = []
    for cell_key, changes in delta.items():
        changes = {k: v for k, v in changes.items() if v}
        if not changes:
            continue
        share = new_cells.get(cell_key)
        if share is None:
            updates.append({"key": cell_key, **{f"d_{n}": changes.get(n, 0) for n in CELL_COLUMNS}})
            continue
        row: dict[str, Any] = dict.fromkeys(CELL_COLUMNS, 0)
        row.update(changes)
        row.update(zip(DIMENSIONS, share.dims, strict=True))
        row.update(cell_key=cell_key, grain=share.grain, period_start=share.period_start)
        inserts.append(row)
    await bulk.upsert(
        session,
        cells_table,
        inserts,
        key=["cell_key"],
        on_conflict=OnConflict.ADD,
        add=CELL_COLUMNS,
    )
    if updates:
        # Cells only old shares name: subtract (one statement for all), then drop those now all
        # zeros, so the cells are exactly those a rebuild from scratch writes.
        await session.execute(
            update(cells_table)
            .where(c.cell_key == bindparam("key"))
            .values({n: c[n] + bindparam(f"d_{n}") for n in CELL_COLUMNS}),
            updates,
        )
        for chunk in chunks([u["key"] for u in updates]):
            await session.execute(
                delete(cells_table).where(c.cell_key.in_(chunk), *(c[n] == 0 for n in CELL_COLUMNS))
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
