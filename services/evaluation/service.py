"""Evaluation's write side: each event goes into the ledger once, then its ticket (or case) is
refolded from the whole ledger and the cells move by the difference.

Handlers write through the consumer's session and never commit. Idempotent: an event id the
ledger holds changes nothing, and a replay under a new id folds to the same facts.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, select
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
from shared.bulk import OnConflict
from shared.events import mediation as m
from shared.events.base import Event, registry
from shared.workcalendar import WorkCalendar

TICKET, CASE = "T:", "C:"

YIELD_EVERY = 64
"""Facts folded between two turns given to the event loop while a batch is staged."""


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
    staged = await stage_many(session=session, events=events, calendar=calendar)
    return await staged.write(session)


@dataclass(frozen=True)
class Carry:
    """What a staged batch will have written once it commits, for the batch staged after it
    while its writes are still in flight: the whole ledger of each fact it refolded (its own
    events included), each such fact's new contribution, and the event ids it applied. Read
    in place of what the database does not show yet; valid only if that batch commits."""

    ledgers: Mapping[str, Sequence[Event]]
    parts: Mapping[str, Sequence[cells.Part]]
    applied: frozenset[str]


@dataclass
class Staged:
    """A batch read and folded, its writes made ready (their documents serialised while the
    batch before is being written) but not yet sent (``write``)."""

    applied: list[str]
    carry: Carry
    # The facts and contributions (upserts) and the cell moves, ready to send.
    upserts: list[bulk.Upsert] = field(default_factory=list)
    adds: bulk.SparseAdd | None = None

    async def write(self, session: AsyncSession) -> list[str]:
        """Send the batch's writes (facts, cells, contributions) through ``session``: on
        PostgreSQL one statement, and one more only when cells are created or emptied. Returns
        the ids of the events applied."""
        await bulk.write_ready(session, self.upserts, self.adds)
        return self.applied


NO_CARRY = Carry(ledgers={}, parts={}, applied=frozenset())


async def stage_many(
    *,
    session: AsyncSession,
    events: Sequence[Event],
    calendar: WorkCalendar,
    carry: Carry | None = None,
) -> Staged:
    """Everything of ``record_many`` but the writes of facts, cells and contributions: the
    ledger insert (which answers which events are new), the reads, the folds and the cell
    moves. ``carry`` is the batch before, staged and still being written: its events are not
    inserted again (they are duplicates), and its facts' ledgers and contributions are taken
    from it rather than from the database, which may not show them yet."""
    carry = carry or NO_CARRY
    keys: dict[str, str] = {}
    rows = []
    unkeyed = []
    for event in events:
        event_id = str(event.event_id)
        if event_id in carry.applied:
            continue  # the batch before applies it: a duplicate, as the ledger would say
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
    done = [*applied, *unkeyed]
    if not applied:  # every event was folded already
        return Staged(applied=done, carry=NO_CARRY)
    in_hand = {str(e.event_id): e for e in events}
    staged = await refold(
        session=session,
        keys=sorted({keys[i] for i in applied}),
        calendar=calendar,
        in_hand=in_hand,
        carry=carry,
    )
    staged.applied = done
    staged.carry = Carry(
        ledgers=staged.carry.ledgers, parts=staged.carry.parts, applied=frozenset(applied)
    )
    return staged


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
    session: AsyncSession,
    keys: Sequence[str],
    in_hand: Mapping[str, Event] | None = None,
    carried: Mapping[str, Sequence[Event]] | None = None,
) -> dict[str, list[Event]]:
    """Every event the ledger holds for each of ``keys``, by key, in the ledger's order. The
    ledger is asked which events each key holds; the payloads of only those neither in
    ``in_hand`` (by event id: the batch being applied) nor decoded before (``DECODED``) are
    read and decoded. ``carried`` (by key) are events a batch still being written holds for
    it: added to what the ledger answers, whether or not that batch has committed yet."""
    in_hand = in_hand or {}
    carried = carried or {}
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
    for key in keys:
        more = carried.get(key)
        if more:
            have = {str(e.event_id) for e in found[key]}
            found[key].extend(e for e in more if str(e.event_id) not in have)
    return found


async def refold(
    *,
    session: AsyncSession,
    keys: Iterable[str],
    calendar: WorkCalendar,
    in_hand: Mapping[str, Event] | None = None,
    carry: Carry | None = None,
) -> Staged:
    """Refold the facts of ``keys`` from their ledgers and work out how the cells move (the
    writes are ``Staged.write``'s): a few statements for all of them."""
    carry = carry or NO_CARRY
    keys = list(keys)
    ledgers = await ledger_events_of(session, keys, in_hand, carry.ledgers)
    tickets: list[dict[str, Any]] = []
    dispatches: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    parts: dict[str, list[cells.Part]] = {}
    for n, key in enumerate(keys, 1):
        events = ledgers.get(key, [])
        if key.startswith(CASE):
            case_fact = fold_case(key[len(CASE) :], events)
            cases.append(case_fact.model_dump())
            parts[key] = cells.case_parts(case_fact)
        else:
            fold = fold_ticket(key[len(TICKET) :], events, calendar=calendar)
            tickets.append(fold.draft.model_dump())
            dispatches.extend(d.model_dump() for d in fold.dispatch_drafts)
            parts[key] = cells.ticket_parts(fold)
        if n % YIELD_EVERY == 0:
            # Pipelined, the batch before is being written: let it send its next statement.
            await asyncio.sleep(0)
    moves, changed = await cell_moves(session=session, parts=parts, carried=carry.parts)
    await asyncio.sleep(0)
    contributions = [{"fact_key": k, "cells": changed[k]} for k in keys if k in changed]
    replace = OnConflict.REPLACE
    upserts = [
        _ready_facts(session, TicketFact, tickets),
        _ready_facts(session, DispatchFact, dispatches),
        _ready_facts(session, CaseFact, cases),
        bulk.ready_upsert(
            session, contributions_table, contributions, key=["fact_key"], on_conflict=replace
        ),
    ]
    await asyncio.sleep(0)
    adds = bulk.ready_add_sparse(
        session,
        cells_table,
        list(moves.changes.values()),
        key="cell_key",
        add=CELL_COLUMNS,
        blank=DIMENSIONS,
        names=moves.names,
    )
    carried = Carry(ledgers={k: ledgers.get(k, []) for k in keys}, parts=parts, applied=frozenset())
    return Staged(applied=[], carry=carried, upserts=upserts, adds=adds)


def _ready_facts(session: AsyncSession, model: Any, rows: Sequence[dict[str, Any]]) -> bulk.Upsert:
    """Facts written whole (``model_dump``'s rows), inserted or replaced (no read first)."""
    table = model.__table__
    (key,) = (c.name for c in table.primary_key.columns)
    return bulk.ready_upsert(session, table, rows, key=[key], on_conflict=OnConflict.REPLACE)


async def cell_moves(
    *,
    session: AsyncSession,
    parts: Mapping[str, Sequence[cells.Part]],
    carried: Mapping[str, Sequence[cells.Part]] | None = None,
) -> tuple[cells.Moves, dict[str, list[Any]]]:
    """How the cells move when each fact's old contribution is taken away and its new one
    added: the differences of all the facts summed per finest cell and spread over the grains
    once, each cell that moves with only the counters that change. A fact's old contribution
    is the stored one, or ``carried``'s (a batch still being written) where it has one. Also
    the new contribution of each fact whose contribution changed, in its stored form
    (``cells.stored``, made once): a fact left out is as it was, nothing of it to move or
    store again."""
    carried = carried or {}
    keys = list(parts)
    c = contributions_table.c
    delta: cells.Delta = {}
    changed: dict[str, list[Any]] = {}
    stored: dict[str, Any] = {}
    for among in bulk.among(session, c.fact_key, [k for k in keys if k not in carried]):
        rows = await session.execute(select(c.fact_key, c.cells).where(among))
        stored.update((key, value) for key, value in rows)
    for key in keys:
        if key in carried:
            if list(carried[key]) == list(parts[key]):
                continue
            cells.add_parts(delta, carried[key], -1)
        elif key in stored:
            now = cells.stored(parts[key])
            if stored[key] == now:
                continue
            changed[key] = now
            cells.add_parts(delta, cells.from_stored_parts(stored[key] or ()), -1)
        changed.setdefault(key, cells.stored(parts[key]))
        cells.add_parts(delta, parts[key], 1)
    return cells.moves(delta), changed


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
