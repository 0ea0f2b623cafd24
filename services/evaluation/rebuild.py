"""Rebuild every projection from scratch by replaying the intake, dispatch and mediation topics
from their first retained record.

Two stages, both in bulk. *Read*: every record is decoded once (the CloudEvents attributes
straight from the headers, the payload validated once), kept in memory grouped by fact, and
written to an emptied ledger (once per event id); with ``from_ledger`` the kept ledger is read
instead. *Fold*: each ticket or case is folded once from its decoded events, with the same
``fold_*`` and ``cells.*_parts`` the live handlers use, and the cells of all of them summed in
memory (``cells.roll_up``). Writes go through a background task, on PostgreSQL as ``COPY``, so
the database works while Python decodes and folds. The fold runs in ``workers`` forked processes
(``_fold_apart``): each inherits the events, folds its share of the facts and writes their rows;
their sums by finest cell are added here, and the cells summed and written a share of the
grains a process. Rebuilt equals live, row for row, with one worker or more (tests check both).
The decoded events are held in memory (about 1–2 KB an event). The live consumer's offsets are
untouched: it carries on from where it was.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import date
from functools import cache, partial
from operator import itemgetter
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Table, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.evaluation import cells, ledger
from services.evaluation.bulk import Sink
from services.evaluation.context import evaluation_calendar
from services.evaluation.facts import fold_case, fold_ticket
from services.evaluation.handlers import FOLDED
from services.evaluation.models import (
    CaseFact,
    DispatchFact,
    TicketFact,
    cells_table,
    contributions_table,
    ledger_table,
)
from services.evaluation.service import CASE, fact_key
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.bus import topic_name
from shared.events import DISPATCH_TOPIC, INTAKE_TOPIC, MEDIATION_TOPIC
from shared.events.base import (
    Event,
    EventDecodeError,
    UnknownEventType,
    decode,
    registry,
)
from shared.workcalendar import OperationalCalendar, WorkCalendar

Progress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: stage "read" (records) or "fold" (facts)."""

BATCH = 2000
WORKERS = 2
"""Processes of a rebuild's fold by default: the machines it runs on have two cores or more."""
TOPICS = (INTAKE_TOPIC, DISPATCH_TOPIC, MEDIATION_TOPIC)
TABLES = (
    ledger_table,
    contributions_table,
    cells_table,
    TicketFact.__table__,  # type: ignore[attr-defined]
    DispatchFact.__table__,  # type: ignore[attr-defined]
    CaseFact.__table__,  # type: ignore[attr-defined]
)


@dataclass
class Report:
    records: int = 0
    events: int = 0
    skipped: int = 0
    facts: int = 0
    cells: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    """By stage: "read", "fold" (with "cells", the cells' sums and writes at its end), "indexes"."""


def _quiet(stage: str, done: int, total: int | None) -> None:
    """No progress display."""


async def records(settings: EvaluationSettings, *, idle_s: float = 3.0) -> AsyncIterator[list[Any]]:
    """Every retained record of the three topics, in batches, until the end offsets seen at the
    start are reached (or nothing arrives for ``idle_s``: some brokers misreport end offsets)."""
    consumer = AIOKafkaConsumer(
        *(topic_name(settings, t) for t in TOPICS),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="evaluation-rebuild",
    )
    await consumer.start()
    try:
        ends: dict[Any, int] = {}
        quiet_since = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            if not ends and consumer.assignment():
                ends = await consumer.end_offsets(list(consumer.assignment()))
            got = [r for rs in batches.values() for r in rs]
            if got:
                quiet_since = time.monotonic()
                yield got
            done = bool(ends) and all(
                await asyncio.gather(*(_reached(consumer, tp, end) for tp, end in ends.items()))
            )
            if done or time.monotonic() - quiet_since > idle_s:
                return
    finally:
        await consumer.stop()


async def _reached(consumer: AIOKafkaConsumer, tp: Any, end: int) -> bool:
    return bool(await consumer.position(tp) >= end)


async def rebuild(
    settings: EvaluationSettings,
    *,
    progress: Progress = _quiet,
    source: AsyncIterator[list[Any]] | None = None,
    engine: AsyncEngine | None = None,
    from_ledger: bool = False,
    workers: int = WORKERS,
) -> Report:
    """Empty the projections and rebuild them from the topics (or ``source`` batches); or,
    ``from_ledger``, keep the ledger and refold every fact from it (after an upgrade that
    changed what a fact adds, when the topics no longer hold every event). The fold runs in
    ``workers`` processes (1: in this one), which connect to the database ``settings`` names
    (``engine``, when given, must be that database's)."""
    if workers < 1:
        raise ValueError(f"a rebuild needs at least one worker, not {workers}")
    own = engine is None
    engine = engine or db.create_engine(settings)
    report = Report()
    calendar = _remembering(evaluation_calendar(settings))
    # Millions of decoded events and parts are held at once and none of them forms a cycle:
    # the cyclic collector's full passes over them cost more than the fold (refcounts free
    # them as before).
    collecting = gc.isenabled()
    gc.disable()
    emptied = TABLES[1:] if from_ledger else TABLES
    try:
        async with engine.begin() as conn:
            for table in emptied:
                await conn.execute(delete(table))
        async with _indexed_after(engine, emptied, report), Sink(engine) as sink:
            started = time.monotonic()
            if from_ledger:
                by_key = await _ledger(engine, report, progress)
            else:
                by_key = await _read(sink, source or records(settings), report, progress)
            report.seconds["read"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            await _fold(
                sink, by_key, calendar, report, progress, settings=settings, workers=workers
            )
            await sink.drain()
            report.seconds["fold"] = round(time.monotonic() - started, 2)
    finally:
        if collecting:
            gc.enable()
        if own:
            await engine.dispose()
    return report


@asynccontextmanager
async def _indexed_after(
    engine: AsyncEngine, tables: Sequence[Table], report: Report
) -> AsyncIterator[None]:
    """The secondary indexes of the emptied ``tables`` dropped while they are loaded and built
    again afterwards (also when the load fails): one sort each instead of a B-tree insertion per
    row (the cells alone have five). On PostgreSQL two connections build them side by side
    (each build is one sort, bound to one core)."""
    indexes = [index for table in tables for index in table.indexes]
    async with engine.begin() as conn:
        for index in indexes:
            await conn.run_sync(partial(index.drop, checkfirst=True))
    try:
        yield
    finally:
        started = time.monotonic()
        lanes = 2 if engine.dialect.name == "postgresql" else 1
        await asyncio.gather(*(_build(engine, indexes[i::lanes]) for i in range(lanes)))
        report.seconds["indexes"] = round(time.monotonic() - started, 2)


async def _build(engine: AsyncEngine, indexes: Sequence[Any]) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        for index in indexes:
            await conn.run_sync(partial(index.create, checkfirst=True))


@dataclass(frozen=True)
class _RememberingCalendar(OperationalCalendar):
    """The same days: a rebuild asks about each day again for every ticket open across it."""

    @cache  # noqa: B019 - one calendar per rebuild, kept for its duration
    def is_workday(self, day: date) -> bool:
        return super().is_workday(day)


def _remembering(calendar: OperationalCalendar) -> OperationalCalendar:
    return _RememberingCalendar(**{f.name: getattr(calendar, f.name) for f in fields(calendar)})


_LEDGER = ("event_id", "fact_key", "event_type", "occurred_at", "payload")
_FOLDED = {cls.cloudevent_type(): cls for cls in FOLDED}


def _decode(record: Any) -> Event | None:
    """One record as its event, or None when evaluation does not fold its type. A folded type
    is read straight from the headers and validated once; anything unusual (and every other
    type) goes through ``decode``, which names what is wrong."""
    headers = dict(record.headers)
    cls = _FOLDED.get(headers.get("ce_type", b"").decode())
    value = (record.value or b"").rstrip()
    if cls is not None and headers.get("ce_specversion") == b"1.0" and value.endswith(b"}"):
        attributes = orjson.dumps(
            {
                "event_id": headers.get("ce_id", b"").decode(),
                "occurred_at": headers.get("ce_time", b"").decode(),
            }
        )
        # The attributes last: in a JSON object the last of a repeated key wins, as they do
        # over the payload in ``decode``.
        joined = value[:-1] + (b"," if value[:-1].strip() != b"{" else b"") + attributes[1:]
        try:
            return cls.model_validate_json(joined)
        except Exception:
            pass  # the full decoder below says exactly what is wrong
    event = decode(record.value, record.headers, record.key)
    return event if type(event).cloudevent_type() in _FOLDED else None


async def _read(
    sink: Sink, source: AsyncIterator[list[Any]], report: Report, progress: Progress
) -> dict[str, list[Event]]:
    """Decode every record once, keep the events by fact, write the ledger."""
    by_key: dict[str, list[Event]] = {}
    seen: set[str] = set()
    async for batch in source:
        rows: list[tuple[Any, ...]] = []
        ledgered: list[Event] = []
        for record in batch:
            report.records += 1
            try:
                event = _decode(record)
            except (UnknownEventType, EventDecodeError):
                report.skipped += 1
                continue
            key = fact_key(event) if event is not None else None
            if event is None or key is None:
                continue
            event_id = str(event.event_id)
            if event_id in seen:
                continue  # a redelivery: the ledger keeps each event once
            seen.add(event_id)
            by_key.setdefault(key, []).append(event)
            rows.append((event_id, key, event.cloudevent_type(), event.occurred_at))
            ledgered.append(event)
        if rows:
            rows = [
                (*row, payload)
                for row, payload in zip(rows, ledger.payloads(ledgered), strict=True)
            ]
            await sink.put(ledger_table, _LEDGER, rows)
            report.events += len(rows)
        progress("read", report.records, None)
    return by_key


async def _ledger(
    engine: AsyncEngine, report: Report, progress: Progress
) -> dict[str, list[Event]]:
    """Every event the ledger holds, by fact (read in pages of the primary key)."""
    classes = registry()
    by_key: dict[str, list[Event]] = {}
    c = ledger_table.c
    after = ""
    while True:
        query = (
            select(c.event_id, c.fact_key, c.event_type, c.payload)
            .where(c.event_id > after)
            .order_by(c.event_id)
            .limit(BATCH * 5)
        )
        async with engine.connect() as conn:
            page = (await conn.execute(query)).all()
        if not page:
            return by_key
        for _event_id, key, ce_type, payload in page:
            by_key.setdefault(key, []).append(ledger.read(classes[ce_type], payload))
        after = page[-1][0]
        report.records += len(page)
        report.events += len(page)
        progress("read", report.records, None)


_TICKETS = TicketFact.__table__  # type: ignore[attr-defined]
_DISPATCHES = DispatchFact.__table__  # type: ignore[attr-defined]
_CASES = CaseFact.__table__  # type: ignore[attr-defined]
_COLUMNS = {t: tuple(c.name for c in t.columns) for t in (_TICKETS, _DISPATCHES, _CASES)}
_COLUMNS[contributions_table] = ("fact_key", "cells")
_ROW = {t: itemgetter(*columns) for t, columns in _COLUMNS.items()}
Rows = dict[Table, list[tuple[Any, ...]]]


def _fold_some(
    keys: Sequence[str], events_of: Callable[[str], list[Event]], calendar: WorkCalendar
) -> tuple[Rows, list[cells.Part]]:
    """Fold these facts: their rows by table, and the parts they add to the cells."""
    rows: Rows = {}
    parts: list[cells.Part] = []

    def add(table: Table, row: dict[str, Any]) -> None:
        rows.setdefault(table, []).append(_ROW[table](row))

    for key in keys:
        events = events_of(key)
        if key.startswith(CASE):
            case = fold_case(key[len(CASE) :], events)
            add(_CASES, case.model_dump())
            own = cells.case_parts(case)
        else:
            fold = fold_ticket(key[2:], events, calendar=calendar)
            add(_TICKETS, fold.draft.__dict__)
            for dispatch in fold.dispatch_drafts:
                add(_DISPATCHES, dispatch.__dict__)
            own = cells.ticket_parts(fold)
        parts += own
        rows.setdefault(contributions_table, []).append((key, cells.stored(own)))
    return rows, parts


async def _put(sink: Sink | _Kept, rows: Rows) -> None:
    for table, batch in rows.items():
        await sink.put(table, _COLUMNS[table], batch)


async def _fold(
    sink: Sink,
    by_key: dict[str, list[Event]],
    calendar: WorkCalendar,
    report: Report,
    progress: Progress,
    *,
    settings: EvaluationSettings,
    workers: int,
) -> None:
    """Fold every ticket and case once; facts and contributions go out in batches as they are
    folded, the summed cells at the end. With more than one worker (and more than one fact)
    the work is done in forked processes (``_fold_apart``), else here."""
    total = len(by_key)
    if min(workers, total) > 1 and "fork" in multiprocessing.get_all_start_methods():
        summed = await _fold_apart(sink, by_key, calendar, report, progress, settings, workers)
    else:
        keys = sorted(by_key)
        parts: list[cells.Part] = []
        for start in range(0, total, BATCH):
            rows, own = _fold_some(keys[start : start + BATCH], by_key.pop, calendar)
            parts += own
            await _put(sink, rows)
            progress("fold", min(start + BATCH, total), total)
        summed, started = 0, time.monotonic()
        for block in cells.roll_up(parts):
            await sink.put(cells_table, cells.ROW_COLUMNS, block)
            summed += len(block)
        report.seconds["cells"] = round(time.monotonic() - started, 2)
    report.facts, report.cells = total, summed
    progress("fold", total, total)


@dataclass
class _Shared:
    """What the forked workers inherit (copy on write) instead of receiving it pickled: the
    events by fact, the facts in order, the calendar (and the days it has remembered), a
    counter of the facts folded (for the progress bar) and, for the cells, the summed parts."""

    settings: EvaluationSettings
    by_key: dict[str, list[Event]]
    keys: list[str]
    calendar: WorkCalendar
    folded: Any  # a multiprocessing.Value("q")
    fine: cells.Fine | None = None


_SHARED: _Shared | None = None
# the largest first, so that the smaller ones fill in beside them
_GRAINS_BY_SIZE = ("day", "month_place", "day_coarse", "month_coarse")


async def _fold_apart(
    sink: Sink,
    by_key: dict[str, list[Event]],
    calendar: WorkCalendar,
    report: Report,
    progress: Progress,
    settings: EvaluationSettings,
    workers: int,
) -> int:
    """The fold in ``workers`` forked processes, in two rounds; each process writes what it
    makes through a ``Sink`` of its own (so the ``COPY`` encoding is spread too; on SQLite, one
    writer, the rows come back and go out through ``sink``). First each folds an equal share of
    the facts (in the order they were read), writes the facts and contributions and returns the
    sums of its parts by finest cell; these are added up here (``cells.add_fine``), then the
    cells are summed from them and written, each process a share of the grains. Returns the
    number of cells."""
    global _SHARED
    context = multiprocessing.get_context("fork")
    # shares in the order the events were read, not interleaved: a worker then touches (and
    # copies, as it counts references) mostly the memory of its own facts' events
    first_read = list(by_key)
    shared = _SHARED = _Shared(settings, by_key, first_read, calendar, context.Value("q", 0))
    loop = asyncio.get_running_loop()
    n = min(workers, len(first_read))
    try:
        with ProcessPoolExecutor(n, mp_context=context) as pool:
            shares = [loop.run_in_executor(pool, _fold_share, i, n) for i in range(n)]
            while not all(share.done() for share in shares):
                await asyncio.wait(shares, timeout=0.25)
                progress("fold", shared.folded.value, len(first_read))
            folded = await _all(shares)
        started = time.monotonic()
        shared.fine = cells.add_fine(fine for fine, _ in folded)
        for _, kept in folded:
            await _write_kept(sink, kept)
        by_key.clear()  # before the second fork: the events are folded
        # one pass over the finest cells a worker: each takes every n-th grain, largest first
        grains = sorted((g.name for g in cells.GRAINS), key=_by_size)
        with ProcessPoolExecutor(n, mp_context=context) as pool:
            written = [loop.run_in_executor(pool, _write_grains, grains[i::n]) for i in range(n)]
            summed = 0
            for count, kept in await _all(written):
                await _write_kept(sink, kept)
                summed += count
        report.seconds["cells"] = round(time.monotonic() - started, 2)
        return summed
    finally:
        _SHARED = None


async def _all(futures: Sequence[asyncio.Future[Any]]) -> list[Any]:
    """Every worker's result once all of them have ended (none still writes), or the first
    failure among them."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _by_size(grain: str) -> int:
    return _GRAINS_BY_SIZE.index(grain) if grain in _GRAINS_BY_SIZE else len(_GRAINS_BY_SIZE)


Batches = list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]
_TABLES = {t.name: t for t in TABLES}


class _Kept:
    """Where only one process may write (SQLite), a worker's stand-in for a ``Sink``: it keeps
    the batches, which go back to the parent and out through its sink."""

    def __init__(self) -> None:
        self.batches: Batches = []

    async def put(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        self.batches.append((table.name, tuple(columns), rows))


@asynccontextmanager
async def _own_sink(settings: EvaluationSettings) -> AsyncIterator[Sink | _Kept]:
    """A worker's writer: a ``Sink`` on a connection of its own, or on SQLite a ``_Kept``."""
    if settings.is_sqlite:
        yield _Kept()
        return
    engine = db.create_engine(settings)
    try:
        async with Sink(engine) as sink:
            yield sink
    finally:
        await engine.dispose()


async def _write_kept(sink: Sink, batches: Batches) -> None:
    for name, columns, rows in batches:
        await sink.put(_TABLES[name], columns, rows)


def _fold_share(index: int, of: int) -> tuple[cells.Fine, Batches]:
    """In a worker: fold the ``index``-th of ``of`` equal shares of the facts, write their rows;
    return the sums of their parts by finest cell (and on SQLite the rows)."""
    assert _SHARED is not None, "a worker forked without the events"
    keys = _SHARED.keys
    return asyncio.run(
        _fold_and_write(_SHARED, keys[index * len(keys) // of : (index + 1) * len(keys) // of])
    )


async def _fold_and_write(shared: _Shared, keys: Sequence[str]) -> tuple[cells.Fine, Batches]:
    parts: list[cells.Part] = []
    async with _own_sink(shared.settings) as sink:
        for start in range(0, len(keys), BATCH):
            some = keys[start : start + BATCH]
            rows, own = _fold_some(some, shared.by_key.__getitem__, shared.calendar)
            parts += own
            await _put(sink, rows)
            with shared.folded.get_lock():
                shared.folded.value += len(some)
    return cells.fine_sums(parts), getattr(sink, "batches", [])


def _write_grains(grains: Sequence[str]) -> tuple[int, Batches]:
    """In a worker: sum the cells of ``grains`` from the inherited sums and write them; how
    many (and on SQLite the rows)."""
    assert _SHARED is not None and _SHARED.fine is not None, "a worker forked without the sums"
    return asyncio.run(
        _write_cells(_SHARED.settings, cells.grain_rows(_SHARED.fine, grains=grains))
    )


async def _write_cells(
    settings: EvaluationSettings, blocks: Iterable[list[tuple[Any, ...]]]
) -> tuple[int, Batches]:
    written = 0
    async with _own_sink(settings) as sink:
        for block in blocks:
            await sink.put(cells_table, cells.ROW_COLUMNS, block)
            written += len(block)
    return written, getattr(sink, "batches", [])
