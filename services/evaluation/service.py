"""Evaluation's write side: each event goes into the ledger once, then its ticket (or case) is
refolded and the cells move by the difference. A ticket's new events are folded onto its fold
state of before where the ledger shows that state to be the fold of all its other events
(``resume``); otherwise, and always for a case, the whole ledger is folded again.

Handlers write through the consumer's session and never commit. Idempotent: an event id the
ledger holds changes nothing, and a replay under a new id folds to the same facts.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import Text, and_, case, cast, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.evaluation import cells, ledger
from services.evaluation.facts import TicketState, finish, fold_case, fold_more, fold_state
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
    while its writes are still in flight: the events it knows of for each fact it folded
    (its own at least: every other event of the fact is committed, since the batch before it
    was settled before it was launched), each such fact's new contribution and fold state
    (``Folded``), and the event ids it applied. Read in place of what the database does not
    show yet; valid only if that batch commits."""

    ledgers: Mapping[str, Sequence[Event]]
    parts: Mapping[str, Sequence[cells.Part]]
    applied: frozenset[str]
    states: Mapping[str, Folded] = field(default_factory=dict)


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
    in_hand: dict[str, Event] = {}
    rows: list[dict[str, Any]] = []
    ledgered: list[Event] = []
    unkeyed = []
    for event in events:
        event_id = str(event.event_id)
        in_hand[event_id] = event
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
            }
        )
        ledgered.append(event)
    for row, payload in zip(rows, ledger.payloads(ledgered), strict=True):
        row["payload"] = payload
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
    new: dict[str, dict[str, Event]] = defaultdict(dict)
    for event_id in applied:
        new[keys[event_id]][event_id] = in_hand[event_id]
    staged = await refold(
        session=session,
        keys=sorted(new),
        calendar=calendar,
        in_hand=in_hand,
        carry=carry,
        new=new,
    )
    staged.applied = done
    staged.carry = replace(staged.carry, applied=frozenset(applied))
    return staged


V = TypeVar("V")


class Recent(Generic[V]):
    """Values remembered by key, the ``bound`` most recently used or remembered."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._values: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def remember(self, values: Mapping[str, V]) -> None:
        """Remember ``values`` (by key) as the most recent."""
        for key, value in values.items():
            self._values[key] = value
            self._values.move_to_end(key)
        while len(self._values) > self.bound:
            self._values.popitem(last=False)


class DecodedEvents(Recent[Event]):
    """Events decoded from the ledger, remembered by event id (the ``bound`` most recent):
    an event id's payload never changes, so an entry can never be stale — which events a
    fact's ledger holds is still asked of the ledger every time; only the decoding is saved."""

    def __init__(self, bound: int = 1 << 15) -> None:  # ~1.6 KB an event: ~50 MB
        super().__init__(bound)


DECODED = DecodedEvents()
"""This process's: the batches of a live consumer refold the tickets of the batches before."""


@dataclass
class Folded:
    """A ticket's fold state and the ids of exactly the events folded into it. An event id's
    payload never changes, so the state is the fold of those events wherever it was made —
    in a batch that committed, one rolled back, or against another database — and it stands
    for a fact's ledger exactly when the ledger holds those ids (``resume``).

    A state is folded onto in place, once: ``resume`` marks the one it folds onto ``spent``
    (before folding, so a fold that fails midway leaves it spent too), and whoever else holds
    it — the cache, the carry of a batch — then takes it for absent."""

    state: TicketState
    ids: frozenset[str]
    spent: bool = False
    # The ticket's dispatch facts as this fold gives them (by dispatch id, their values in
    # column order), stored wherever the ledger holds exactly ``ids``: facts are written in
    # the transaction of the ledger rows, and a fold of the same events gives the same facts.
    # A fold resumed from it writes only the dispatch facts that differ (a callback changes
    # the ticket, not its dispatches). Empty: every one is written.
    dispatches: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


class FoldStates(Recent[Folded]):
    """Ticket fold states, remembered by fact key (the ``bound`` most recent), to fold a
    ticket's new events onto instead of its whole ledger. Never trusted: an entry is used only
    if the ledger holds exactly its events and the new ones (``resume``), which no failed
    batch, other consumer or rebalance can fake; anything else refolds from the ledger."""

    # A ticket is resumed only if its state outlived the tickets between two of its events:
    # past the bound every fold reads, decodes and folds the whole ledger (0.21 against 0.12 ms
    # of Python an event with 16,000 tickets between, docs/benchmarks.md). ~5 KB a ticket of
    # six events, ~7 KB one of 14: ~160-230 MB full.
    def __init__(self, bound: int = 1 << 15) -> None:
        super().__init__(bound)


FOLDED = FoldStates()
"""This process's: a live stream folds each ticket's events onto its state of the batch before."""

FOLDS: Counter[str] = Counter()
"""How many ticket folds resumed a state (``resumed``) and how many folded a whole ledger
(``refolded``), in this process."""


def resume(prior: Folded | None, held: AbstractSet[str], new: Mapping[str, Event]) -> Folded | None:
    """``prior`` with ``new`` (by event id) folded onto it, if that is provably the fold of
    ``held`` (the ids the fact's ledger holds, ``new``'s among them): ``held`` is exactly
    ``prior``'s events and the new ones, none of the new ones folded before, and every one
    sorting after the last one folded. Else None (``prior`` as it was): fold the whole
    ledger. ``prior`` is spent either way once folded onto."""
    if prior is None or prior.spent:
        return None
    if (
        not prior.ids.isdisjoint(new)
        or len(held) != len(prior.ids) + len(new)
        or not prior.ids <= held
        or not new.keys() <= held
    ):
        return None
    prior.spent = True
    if not fold_more(prior.state, new.values()):
        prior.spent = False  # left as it was
        return None
    return Folded(prior.state, prior.ids.union(new), dispatches=prior.dispatches)


# Each key's events through the fact index, one probe a key, whatever the planner believes of
# the table. ``fact_key = ANY(:keys)`` is planned from the table's statistics: without them (a
# server with autovacuum off, as the bench's; a fresh table before its first analyse) each key
# is taken for 1/200 of the ledger, a fetch's hundreds of keys for all of it, and every fetch
# read the whole ledger — a cost growing with the ledger (docs/benchmarks.md, "Evaluation in
# the whole suite"). A lateral subquery that is not flattened (``OFFSET 0``) can only be run
# once a key. (The same missing statistics put its estimated cost far above
# ``jit_above_cost``: every service's connections have JIT off, ``shared.db.create_engine``.)
_FACT_KEY = ledger_table.c.fact_key.type.compile(dialect=postgresql.dialect())
_LEDGER_IDS = text(
    "SELECT k.fact_key, l.event_id, l.event_type "
    f"FROM unnest(CAST(:keys AS {_FACT_KEY}[])) AS k(fact_key) "
    "CROSS JOIN LATERAL (SELECT event_id, event_type FROM eval_ledger "
    "WHERE fact_key = k.fact_key OFFSET 0) AS l"
)


async def ledger_ids_of(
    session: AsyncSession, keys: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """The id and type of every event the ledger holds for each of ``keys``, in its order."""
    c = ledger_table.c
    held: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if keys and session.get_bind().dialect.name == "postgresql":
        for key, event_id, event_type in await session.execute(_LEDGER_IDS, {"keys": list(keys)}):
            held[key].append((event_id, event_type))
        return held
    for among in bulk.among(session, c.fact_key, keys):
        rows = await session.execute(select(c.fact_key, c.event_id, c.event_type).where(among))
        for key, event_id, event_type in rows:
            held[key].append((event_id, event_type))
    return held


async def ledger_events_of(
    session: AsyncSession,
    keys: Sequence[str],
    in_hand: Mapping[str, Event] | None = None,
    carried: Mapping[str, Sequence[Event]] | None = None,
    held: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> dict[str, list[Event]]:
    """Every event the ledger holds for each of ``keys``, by key, in the ledger's order. The
    ledger is asked which events each key holds (unless ``held`` is its answer already); the
    payloads of only those neither in ``in_hand`` (by event id: the batch being applied) nor
    decoded before (``DECODED``) are read and decoded. ``carried`` (by key) are events a batch
    still being written holds for it: added to what the ledger answers, whether or not that
    batch has committed yet."""
    in_hand = in_hand or {}
    carried = carried or {}
    if held is None:
        held = await ledger_ids_of(session, keys)
    events: dict[str, Event] = {}
    fresh: dict[str, Event] = {}  # to remember: in hand, or decoded now
    missing: dict[str, str] = {}
    for key in keys:
        for event_id, event_type in held.get(key, ()):
            event = DECODED.get(event_id)
            if event is None:
                event = in_hand.get(event_id)
                if event is None:
                    missing[event_id] = event_type
                    continue
                fresh[event_id] = event
            events[event_id] = event
    classes = registry()
    c = ledger_table.c
    for among in bulk.among(session, c.event_id, list(missing)):
        for event_id, payload in await session.execute(select(c.event_id, c.payload).where(among)):
            fresh[event_id] = ledger.read(classes[missing[event_id]], payload)
    DECODED.remember(fresh)
    events.update(fresh)
    found: dict[str, list[Event]] = defaultdict(list)
    for key in keys:
        found[key].extend(events[event_id] for event_id, _ in held.get(key, ()))
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
    new: Mapping[str, Mapping[str, Event]] | None = None,
) -> Staged:
    """Refold the facts of ``keys`` and work out how the cells move (the writes are
    ``Staged.write``'s): a few statements for all of them. A ticket's ``new`` events (this
    batch's, by event id, already in the ledger) are folded onto its state of before
    (``carry``'s, else ``FOLDED``'s) where ``resume`` proves that the fold of its whole ledger;
    otherwise, and for mediation cases, the whole ledger is read and folded."""
    carry = carry or NO_CARRY
    new = new or {}
    keys = list(keys)
    held = await ledger_ids_of(session, keys)
    states: dict[str, Folded] = {}
    for key in keys:
        if not key.startswith(TICKET) or key not in new:
            continue
        ids = {event_id for event_id, _ in held.get(key, ())}
        ids.update(str(e.event_id) for e in carry.ledgers.get(key, ()))
        folded = resume(carry.states.get(key) or FOLDED.get(key), ids, new[key])
        if folded is not None:
            states[key] = folded
            DECODED.remember(new[key])
    whole = [k for k in keys if k not in states]
    FOLDS["resumed"] += len(states)
    FOLDS["refolded"] += len(whole) - sum(k.startswith(CASE) for k in whole)
    ledgers = await ledger_events_of(session, whole, in_hand, carry.ledgers, held)
    tickets: list[dict[str, Any]] = []
    dispatches: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    parts: dict[str, list[cells.Part]] = {}
    for n, key in enumerate(keys, 1):
        if key.startswith(CASE):
            case_fact = fold_case(key[len(CASE) :], ledgers.get(key, []))
            cases.append(case_fact.model_dump())
            parts[key] = cells.case_parts(case_fact)
        else:
            folded = states.get(key)
            if folded is None:
                events = ledgers.get(key, [])
                state = fold_state(key[len(TICKET) :], events)
                folded = states[key] = Folded(state, frozenset(str(e.event_id) for e in events))
            fold = finish(folded.state, calendar=calendar)
            tickets.append(fold.draft.model_dump())
            folded.dispatches = unwritten(
                [d.model_dump() for d in fold.dispatch_drafts], folded.dispatches, dispatches
            )
            parts[key] = cells.ticket_parts(fold)
        if n % YIELD_EVERY == 0:
            # Pipelined, the batch before is being written: let it send its next statement.
            await asyncio.sleep(0)
    FOLDED.remember(states)
    moves, changed = await cell_moves(session=session, parts=parts, carried=carry.parts)
    await asyncio.sleep(0)
    contributions = [{"fact_key": k, "cells": changed[k]} for k in keys if k in changed]
    upserts = [
        _ready_facts(session, TicketFact, tickets),
        _ready_facts(session, DispatchFact, dispatches),
        _ready_facts(session, CaseFact, cases),
        bulk.ready_upsert(
            session,
            contributions_table,
            contributions,
            key=["fact_key"],
            on_conflict=OnConflict.REPLACE,
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
    known = {k: ledgers[k] if k in ledgers else list(new.get(k, {}).values()) for k in keys}
    carried = Carry(ledgers=known, parts=parts, applied=frozenset(), states=states)
    return Staged(applied=[], carry=carried, upserts=upserts, adds=adds)


def unwritten(
    rows: Sequence[dict[str, Any]],
    stored: Mapping[str, tuple[Any, ...]],
    out: list[dict[str, Any]],
) -> dict[str, tuple[Any, ...]]:
    """Add to ``out`` the dispatch facts of ``rows`` that differ from ``stored`` (their values
    by dispatch id, as ``Folded.dispatches`` keeps them); return those of ``rows``."""
    now: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        dispatch_id = row["dispatch_id"]
        values = now[dispatch_id] = tuple(row.values())
        if stored.get(dispatch_id) != values:
            out.append(row)
    return now


def _ready_facts(session: AsyncSession, model: Any, rows: Sequence[dict[str, Any]]) -> bulk.Upsert:
    """Facts written whole (``model_dump``'s rows), inserted or replaced (no read first); on
    PostgreSQL each row sent as its values in column order (``positional``): a fact's ~40
    columns read by name from a JSON object were most of its write's CPU."""
    table = model.__table__
    (key,) = (c.name for c in table.primary_key.columns)
    return bulk.ready_upsert(
        session, table, rows, key=[key], on_conflict=OnConflict.REPLACE, positional=True
    )


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
    # Read as text and parsed by orjson: the driver's JSON codec parses with the stdlib's
    # ``json.loads``, ~4 % of the live apply's Python for these documents; the values are the same.
    document = cast(c.cells, Text)
    for among in bulk.among(session, c.fact_key, [k for k in keys if k not in carried]):
        rows = await session.execute(select(c.fact_key, document).where(among))
        stored.update((key, orjson.loads(value)) for key, value in rows)
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
