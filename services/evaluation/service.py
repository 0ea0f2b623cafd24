"""Evaluation's write side: each event goes into the ledger once, then its ticket (or case) is
refolded from the whole ledger and the cells move by the difference.

Handlers write through the consumer's session and never commit. Idempotent: an event id the
ledger holds changes nothing, and a replay under a new id folds to the same facts.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, case, delete, func, select
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
from shared.bulk import Draft, OnConflict
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
) -> list[str]:
    """Fold a batch of events: the ledger rows in one statement (an event id the ledger holds
    is skipped), then each touched fact refolded once, however many of its events came.
    Returns the ids of the events applied: all but those the ledger held already (the
    inbox's look-up, answered by the ledger's own insert)."""
    keys: dict[str, str] = {}
    rows = []
    unkeyed = []
    for event in events:
        event_id = str(event.event_id)
        key = fact_key(event)
        if key is None:
            unkeyed.append(event_id)  # about no ticket or case: nothing to fold
            continue
        keys[event_id] = key
        rows.append(
            {
                "event_id": event_id,
                "fact_key": key,
                "event_type": event.cloudevent_type(),
                "occurred_at": event.occurred_at,
                "payload": event.model_dump_json(),
            }
        )
    applied = await bulk.upsert(
        session,
        ledger_table,
        rows,
        key=["event_id"],
        on_conflict=OnConflict.NOTHING,
        returning="event_id",
    )
    if applied:  # else every event was folded already
        in_hand = {str(e.event_id): e for e in events}
        await refold(
            session=session,
            keys=sorted({keys[i] for i in applied}),
            calendar=calendar,
            in_hand=in_hand,
        )
    return [*applied, *unkeyed]


class DecodedEvents:
    """Events decoded from the ledger, remembered by event id (the ``bound`` most recent):
    an event id's payload never changes, so an entry can never be stale — which events a
    fact's ledger holds is still asked of the ledger every time; only the decoding is saved."""

    def __init__(self, bound: int = 1 << 15) -> None:  # ~1.6 KB an event: ~50 MB
        self.bound = bound
        self._events: OrderedDict[str, Event] = OrderedDict()

    def get(self, event_id: str) -> Event | None:
        event = self._events.get(event_id)
        if event is not None:
            self._events.move_to_end(event_id)
        return event

    def remember(self, events: Mapping[str, Event]) -> None:
        """Remember ``events`` (by event id) as the most recent."""
        for event_id, event in events.items():
            self._events[event_id] = event
            self._events.move_to_end(event_id)
        while len(self._events) > self.bound:
            self._events.popitem(last=False)


DECODED = DecodedEvents()
"""This process's: the batches of a live consumer refold the tickets of the batches before."""


async def ledger_events_of(
    session: AsyncSession, keys: Sequence[str], in_hand: Mapping[str, Event] | None = None
) -> dict[str, list[Event]]:
    """Every event the ledger holds for each of ``keys``, by key, in the ledger's order. The
    ledger is asked which events each key holds; the payloads of only those neither in
    ``in_hand`` (by event id: the batch being applied) nor decoded before (``DECODED``) are
    read and decoded."""
    in_hand = in_hand or {}
    c = ledger_table.c
    held: list[tuple[str, str, str]] = []
    for among in bulk.among(session, c.fact_key, keys):
        rows = await session.execute(select(c.fact_key, c.event_id, c.event_type).where(among))
        held.extend((key, event_id, event_type) for key, event_id, event_type in rows)
    events: dict[str, Event] = {}
    fresh: dict[str, Event] = {}  # to remember: in hand, or decoded now
    missing: dict[str, str] = {}
    for _, event_id, event_type in held:
        event = DECODED.get(event_id)
        if event is None:
            event = in_hand.get(event_id)
            if event is None:
                missing[event_id] = event_type
                continue
            fresh[event_id] = event
        events[event_id] = event
    classes = registry()
    for among in bulk.among(session, c.event_id, list(missing)):
        for event_id, payload in await session.execute(select(c.event_id, c.payload).where(among)):
            fresh[event_id] = classes[missing[event_id]].model_validate_json(payload)
    DECODED.remember(fresh)
    events.update(fresh)
    found: dict[str, list[Event]] = defaultdict(list)
    for key, event_id, _ in held:
        found[key].append(events[event_id])
    return found


async def refold(
    *,
    session: AsyncSession,
    keys: Iterable[str],
    calendar: WorkCalendar,
    in_hand: Mapping[str, Event] | None = None,
) -> None:
    """Refold the facts of ``keys`` from their ledgers and move the cells by the difference:
    a few statements for all of them."""
    keys = list(keys)
    ledgers = await ledger_events_of(session, keys, in_hand)
    tickets: list[Draft] = []
    dispatches: list[Draft] = []
    cases: list[CaseFact] = []
    parts: dict[str, list[cells.Part]] = {}
    for key in keys:
        events = ledgers.get(key, [])
        if key.startswith(CASE):
            case_fact = fold_case(key[len(CASE) :], events)
            cases.append(case_fact)
            parts[key] = cells.case_parts(case_fact)
        else:
            fold = fold_ticket(key[len(TICKET) :], events, calendar=calendar)
            tickets.append(fold.draft)
            dispatches.extend(fold.dispatch_drafts)
            parts[key] = cells.ticket_parts(fold)
    await upsert(session, TicketFact, tickets)
    await upsert(session, DispatchFact, dispatches)
    await upsert(session, CaseFact, cases)
    await move_cells(session=session, parts=parts)


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
        document=True,
    )


async def move_cells(*, session: AsyncSession, parts: Mapping[str, Sequence[cells.Part]]) -> None:
    """Take each fact's old contribution away from the cells and add its new one: the
    differences of all the facts summed per finest cell, spread over the grains once, and
    each cell that moves written once, with only the counters that change."""
    keys = list(parts)
    c = contributions_table.c
    delta: cells.Delta = {}
    for among in bulk.among(session, c.fact_key, keys):
        for _, stored in await session.execute(select(c.fact_key, c.cells).where(among)):
            cells.add_parts(delta, cells.from_stored_parts(stored or ()), -1)
    for key in keys:
        cells.add_parts(delta, parts[key], 1)
    await apply_delta(session=session, moves=cells.moves(delta))
    await bulk.upsert(
        session,
        contributions_table,
        [{"fact_key": key, "cells": cells.stored(parts[key])} for key in keys],
        key=["fact_key"],
        on_conflict=OnConflict.REPLACE,
        document=True,
    )


async def apply_delta(*, session: AsyncSession, moves: cells.Moves) -> None:
    """Add sparse counter differences (``cells.moves``) to the cells, creating the new ones
    (their grain, period and dimensions named only for those); a cell left all zeros is
    dropped, so the cells are exactly those a rebuild writes."""
    emptied = await bulk.add_sparse(
        session,
        cells_table,
        list(moves.changes.values()),
        key="cell_key",
        add=CELL_COLUMNS,
        blank=DIMENSIONS,
        names=moves.names,
    )
    for among in bulk.among(session, cells_table.c.cell_key, emptied):
        await session.execute(delete(cells_table).where(among))


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
