"""Rebuild every projection from scratch by replaying the intake, dispatch and mediation topics
from their first retained record.

Two stages, both in bulk. *Read*: every record is decoded once (the CloudEvents attributes
straight from the headers, the payload validated once), kept in memory grouped by fact, and
written to an emptied ledger (once per event id); with ``from_ledger`` the kept ledger is read
instead. *Fold*: each ticket or case is folded once from its decoded events, with the same
``fold_*`` and ``cells.*_parts`` the live handlers use, and the cells of all of them summed in
memory (``cells.roll_up``). Writes go through a background task, on PostgreSQL as ``COPY``, so
the database works while Python decodes and folds. With ``workers`` > 1 both stages run in
forked processes (``_apart``): this one only reads the records, undecoded, and routes each to a
worker by its Kafka key (a ticket's records name it); each worker decodes its share, writes its
ledger rows, folds its facts and writes their rows; their sums by finest cell are added here,
and the same workers sum and write the cells, a share of the grains each. Rebuilt equals live,
row for row, with one worker or more (tests check both). The decoded events are held in memory
(about 1–2 KB an event). The live consumer's offsets are untouched: it carries on from where it
was.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import pickle
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import date
from functools import cache, partial
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Table, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.evaluation import cells
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
from shared.events.base import Event, EventDecodeError, UnknownEventType, decode, registry
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
            if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
                await _apart(
                    sink,
                    None if from_ledger else source or records(settings),
                    engine,
                    calendar,
                    report,
                    progress,
                    settings=settings,
                    workers=workers,
                    started=started,
                )
            else:
                if from_ledger:
                    by_key = await _ledger(engine, report, progress)
                else:
                    by_key = await _read(sink, source or records(settings), report, progress)
                report.seconds["read"] = round(time.monotonic() - started, 2)
                await _fold(sink, by_key, calendar, report, progress)
            await sink.drain()
            report.seconds["fold"] = round(time.monotonic() - started - report.seconds["read"], 2)
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
            rows.append(
                (event_id, key, event.cloudevent_type(), event.occurred_at, event.model_dump_json())
            )
        if rows:
            await sink.put(ledger_table, _LEDGER, rows)
            report.events += len(rows)
        progress("read", report.records, None)
    return by_key


async def _ledger(
    engine: AsyncEngine, report: Report, progress: Progress
) -> dict[str, list[Event]]:
    """Every event the ledger holds, by fact."""
    classes = registry()
    by_key: dict[str, list[Event]] = {}
    async for page in _ledger_pages(engine):
        for key, ce_type, payload in page:
            by_key.setdefault(key, []).append(classes[ce_type].model_validate_json(payload))
        report.records += len(page)
        report.events += len(page)
        progress("read", report.records, None)
    return by_key


async def _ledger_pages(engine: AsyncEngine) -> AsyncIterator[list[tuple[str, str, str]]]:
    """The ledger's rows (fact, type and payload), in pages of the primary key."""
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
            return
        yield [(key, ce_type, payload) for _, key, ce_type, payload in page]
        after = page[-1][0]


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
) -> None:
    """Fold every ticket and case once, in this process; facts and contributions go out in
    batches as they are folded, the summed cells at the end."""
    total = len(by_key)
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
    """What the forked workers inherit: the settings, whether they decode ledger rows (else
    records), the calendar, and a counter of the facts folded (for the progress bar)."""

    settings: EvaluationSettings
    from_ledger: bool
    calendar: WorkCalendar
    folded: Any  # a multiprocessing.Value("q")


_SHARED: _Shared | None = None
# the largest first, so that the smaller ones fill in beside them
_GRAINS_BY_SIZE = ("day", "month", "month_place", "day_coarse", "week_coarse", "month_coarse")


def _home(key: str, of: int) -> int:
    """The worker (of ``of``) that folds the fact ``key``: by its ticket's or case's id, as
    the records of a ticket are keyed in Kafka (a hash of the same bytes in every process: the
    workers are forked, the hash seed is theirs too)."""
    return hash(key[2:].encode()) % of


class _Feed:
    """The undecoded items on their way to the workers, a lane (a pipe) each, sent in the
    background: a pipe takes a batch only as fast as its worker reads it."""

    def __init__(self, conns: Sequence[Connection]) -> None:
        self._conns = conns
        self._queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(4) for _ in conns]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def lanes(self) -> int:
        return len(self._conns)

    async def __aenter__(self) -> _Feed:
        self._tasks = [
            asyncio.create_task(_send(queue, conn))
            for queue, conn in zip(self._queues, self._conns, strict=True)
        ]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            for lane in range(len(self._conns)):
                await self._put(lane, None)
            await asyncio.gather(*self._tasks)
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def put(self, lane: int, positions: list[int], items: list[Any]) -> None:
        """Send a batch of items, with their positions in the order read, to the ``lane``-th
        worker (waiting while its queue is full); a worker that has failed raises here."""
        await self._put(lane, pickle.dumps((positions, items), protocol=5))

    async def _put(self, lane: int, data: bytes | None) -> None:
        task = self._tasks[lane]
        putting = asyncio.ensure_future(self._queues[lane].put(data))
        await asyncio.wait({putting, task}, return_when=asyncio.FIRST_COMPLETED)
        if not putting.done():
            putting.cancel()
            task.result()


_END = pickle.dumps(None)


async def _send(queue: asyncio.Queue[bytes | None], conn: Connection) -> None:
    while True:
        data = await queue.get()
        await asyncio.to_thread(_send_bytes, conn, _END if data is None else data)
        if data is None:
            return


def _send_bytes(conn: Connection, data: bytes) -> None:
    try:
        conn.send_bytes(data)
    except OSError as exc:  # the worker has gone: what it said last, if anything, says why
        raise _failure(conn) from exc


def _failure(conn: Connection) -> BaseException:
    try:
        if conn.poll():
            kind, body = conn.recv()
            if kind == "failed":
                return body  # type: ignore[no-any-return]
    except (EOFError, OSError):
        pass
    return RuntimeError("a rebuild worker ended without handing back its work")


async def _feed_records(
    source: AsyncIterator[list[Any]], feed: _Feed, report: Report, progress: Progress
) -> None:
    """Every record, undecoded, routed to a worker by its Kafka key (a ticket's records name the
    ticket: the worker that folds it, ``_home``). A record whose key does not name its fact (a
    mediation case's keyed by its ticket, one without a key) is routed all the same: the worker
    that decodes it hands it to the fact's own."""
    of = feed.lanes
    at = 0
    async for batch in source:
        positions: list[list[int]] = [[] for _ in range(of)]
        items: list[list[Any]] = [[] for _ in range(of)]
        for record in batch:
            key = record.key
            lane = hash(key) % of if key else 0
            positions[lane].append(at)
            items[lane].append((record.value, record.headers, key))
            at += 1
        for lane in range(of):
            if items[lane]:
                await feed.put(lane, positions[lane], items[lane])
        report.records = at
        progress("read", at, None)


async def _feed_ledger(
    engine: AsyncEngine, feed: _Feed, report: Report, progress: Progress
) -> None:
    """Every row of the ledger, undecoded (its fact, type and payload), sent to the worker
    that folds its fact."""
    of = feed.lanes
    async for page in _ledger_pages(engine):
        positions: list[list[int]] = [[] for _ in range(of)]
        items: list[list[Any]] = [[] for _ in range(of)]
        for at, row in enumerate(page, report.records):
            lane = _home(row[0], of)
            positions[lane].append(at)
            items[lane].append(row)
        for lane in range(of):
            if items[lane]:
                await feed.put(lane, positions[lane], items[lane])
        report.records += len(page)
        progress("read", report.records, None)


async def _apart(
    sink: Sink,
    source: AsyncIterator[list[Any]] | None,
    engine: AsyncEngine,
    calendar: WorkCalendar,
    report: Report,
    progress: Progress,
    *,
    settings: EvaluationSettings,
    workers: int,
    started: float,
) -> None:
    """Decode, fold and sum in ``workers`` processes, forked before anything is read (so they
    share no memory of the events) and kept for every step (``_work``); each writes what it
    makes through a ``Sink`` of its own (on SQLite, one writer, the rows come back and go out
    through ``sink``). This process reads the records (or, with no ``source``, the ledger's
    rows) and sends each, undecoded, to a worker. Step by step, each worker: decodes what it is
    sent and writes its ledger rows, naming the records that turned out to be another's fact;
    decodes those the others named for it; folds its facts and writes them and their
    contributions; hands back the sums of its parts by finest cell. These are added up here
    (``cells.add_fine``) and sent to every worker, which sums and writes the cells of its share
    of the grains."""
    global _SHARED
    context = multiprocessing.get_context("fork")
    from_ledger = source is None
    folded = context.Value("q", 0)
    _SHARED = _Shared(settings, from_ledger, calendar, folded)
    pipes = [context.Pipe() for _ in range(workers)]
    processes = [
        context.Process(target=_worker, args=(index, workers, theirs), daemon=True)
        for index, (_, theirs) in enumerate(pipes)
    ]
    ours = [mine for mine, _ in pipes]
    try:
        for process in processes:
            process.start()
        _SHARED = None  # the workers have it
        for _, theirs in pipes:
            theirs.close()
        async with _Feed(ours) as feed:
            if source is None:
                await _feed_ledger(engine, feed, report, progress)
            else:
                await _feed_records(source, feed, report, progress)
        report.seconds["route"] = round(time.monotonic() - started, 2)
        strays = await _each(ours)
        for index, conn in enumerate(ours):
            theirs_now = [stray for named in strays for stray in named.get(index, ())]
            conn.send(sorted(theirs_now, key=itemgetter(0)))
        total = 0
        for events, skipped, facts, kept in await _each(ours):
            report.events += events
            report.skipped += skipped
            total += facts
            await _write_kept(sink, kept)
        report.facts = total
        report.seconds["read"] = round(time.monotonic() - started, 2)

        def more() -> None:
            progress("fold", folded.value, total)

        sums = []
        for fine, kept in await _each(ours, more):
            sums.append(fine)
            await _write_kept(sink, kept)
        summed_at = time.monotonic()
        message = pickle.dumps(cells.add_fine(sums), protocol=5)
        del sums
        for conn in ours:
            conn.send_bytes(message)
        del message
        for count, kept in await _each(ours):
            await _write_kept(sink, kept)
            report.cells += count
        report.seconds["cells"] = round(time.monotonic() - summed_at, 2)
        for process in processes:
            process.join()
    finally:
        _SHARED = None
        for process in processes:
            if process.is_alive():
                process.kill()
            if process.pid is not None:
                process.join()
        for conn in ours:
            conn.close()
    progress("fold", total, total)


async def _each(conns: Sequence[Connection], poll: Callable[[], None] = lambda: None) -> list[Any]:
    """The next message of every worker, once all have sent theirs (``poll`` called meanwhile,
    four times a second); a worker's failure is raised as soon as it is known."""
    waits = [asyncio.ensure_future(asyncio.to_thread(_receive, conn)) for conn in conns]
    for wait in waits:  # if one fails, the others' ends are retrieved (and dropped) too
        wait.add_done_callback(lambda done: done.cancelled() or done.exception())
    while True:
        await asyncio.wait(waits, timeout=0.25, return_when=asyncio.FIRST_EXCEPTION)
        for wait in waits:
            if wait.done() and wait.exception() is not None:
                raise wait.exception()  # type: ignore[misc]
        if all(wait.done() for wait in waits):
            return [wait.result() for wait in waits]
        poll()


def _receive(conn: Connection) -> Any:
    try:
        kind, body = conn.recv()
    except (EOFError, OSError) as exc:
        raise RuntimeError("a rebuild worker ended without handing back its work") from exc
    if kind == "failed":
        raise body
    return body


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


def _worker(index: int, of: int, conn: Connection) -> None:
    """A forked worker's life (``_apart``): its steps, or the failure that ended them."""
    try:
        assert _SHARED is not None, "a worker forked without its items"
        asyncio.run(_work(_SHARED, index, of, conn))
    except BaseException as exc:  # handed to the rebuilding process, raised there
        conn.send(
            ("failed", exc if _picklable(exc) else RuntimeError(f"{type(exc).__name__}: {exc}"))
        )
    finally:
        conn.close()


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


class _Raw(NamedTuple):
    """A record as sent to a worker: what ``_decode`` reads of it."""

    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    key: bytes | None


def _decoded_record(item: tuple[Any, Any, Any]) -> tuple[str, Event] | None:
    event = _decode(_Raw(*item))
    key = fact_key(event) if event is not None else None
    return None if event is None or key is None else (key, event)


def _decoded_row(row: tuple[str, str, str], classes: dict[str, type[Event]]) -> tuple[str, Event]:
    key, ce_type, payload = row
    return key, classes[ce_type].model_validate_json(payload)


Facts = dict[str, list[tuple[int, Event]]]
"""A worker's events by fact, each with its position among the items (the order read)."""


async def _work(shared: _Shared, index: int, of: int, conn: Connection) -> None:
    decoded: Callable[[Any], tuple[str, Event] | None] = (
        partial(_decoded_row, classes=registry()) if shared.from_ledger else _decoded_record
    )
    write_ledger = not shared.from_ledger
    by_key: Facts = {}
    seen: set[str] = set()
    skipped = events = 0

    async def take(
        items: Iterable[tuple[int, Any]], strays: dict[int, list[tuple[int, Any]]] | None
    ) -> set[str]:
        """Decode these items (each with its position in the order read) and keep their
        events by fact, once each, writing their ledger rows; one whose fact is another
        worker's is put in ``strays`` (when given, else the facts added to are returned)."""
        nonlocal skipped, events
        rows: list[tuple[Any, ...]] = []
        touched: set[str] = set()
        for at, item in items:
            try:
                got = decoded(item)
            except (UnknownEventType, EventDecodeError):
                skipped += 1
                continue
            if got is None:
                continue
            key, event = got
            if strays is not None and (home := _home(key, of)) != index:
                strays.setdefault(home, []).append((at, item))
                continue
            event_id = str(event.event_id)
            if event_id in seen:
                continue  # a redelivery: the ledger keeps each event once
            seen.add(event_id)
            by_key.setdefault(key, []).append((at, event))
            events += 1
            if strays is None:
                touched.add(key)
            if write_ledger:
                rows.append(
                    (
                        event_id,
                        key,
                        event.cloudevent_type(),
                        event.occurred_at,
                        event.model_dump_json(),
                    )
                )
        if rows:
            await sink.put(ledger_table, _LEDGER, rows)
        return touched

    async with _own_sink(shared.settings) as sink:
        strays: dict[int, list[tuple[int, Any]]] = {}
        while (batch := conn.recv()) is not None:
            positions, items = batch
            await take(zip(positions, items, strict=True), strays)
        conn.send(("strays", strays))
        theirs: list[tuple[int, Any]] = conn.recv()
        if theirs:
            for key in await take(theirs, None):
                by_key[key].sort(key=itemgetter(0))  # in the order read, as in one process
        conn.send(("read", (events, skipped, len(by_key), _taken(sink))))

        keys = list(by_key)
        parts: list[cells.Part] = []
        for start in range(0, len(keys), BATCH):
            some = keys[start : start + BATCH]
            rows, own = _fold_some(some, partial(_events_of, by_key), shared.calendar)
            parts += own
            await _put(sink, rows)
            with shared.folded.get_lock():
                shared.folded.value += len(some)
        fine = cells.fine_sums(parts)
        del parts
        conn.send(("folded", (fine, _taken(sink))))
        del fine

        summed: cells.Fine = conn.recv()
        grains = sorted((g.name for g in cells.GRAINS), key=_by_size)[index::of]
        count = 0
        for block in cells.grain_rows(summed, grains=grains):
            await sink.put(cells_table, cells.ROW_COLUMNS, block)
            count += len(block)
    conn.send(("cells", (count, _taken(sink))))


def _events_of(by_key: Facts, key: str) -> list[Event]:
    """A fact's events, let go of once folded."""
    return [event for _, event in by_key.pop(key)]


def _taken(sink: Sink | _Kept) -> Batches:
    """What a ``_Kept`` holds, handed over (nothing for a ``Sink``: it wrote its rows)."""
    if isinstance(sink, _Kept):
        batches, sink.batches = sink.batches, []
        return batches
    return []
