"""Evaluation benchmark: committee queries over millions of ticket facts, rebuild, apply rate.

    python -m bench.evaluation [--facts 10000000] [--rebuild-events 1000000]
                               [--apply-events 20000] [--repeat 30] [--postgres URL]
                               [--out bench/results/evaluation.json]

On PostgreSQL (``--postgres``, default ``FENGQIAO_TEST_POSTGRES_URL`` or the local ``test``
database), in a schema of its own that is dropped afterwards:

1. **queries**: ``--facts`` synthetic ticket facts (two years, 4 districts, their towns and grids,
   about 400 departments that follow the area, 72 channels, every leaf category) are drawn and
   summed into the cells of the grains the queries read (``bench/evaluation_data.py``; the facts
   are not stored, the queries read only cells), which are copied in. Then every committee query
   the dashboard and the API make is run ``--repeat`` times through the same functions the
   routes call; p50 and p99 per query, and the grain each sums.
2. **rebuild**: ``--rebuild-events`` encoded CloudEvents records (a realistic mix: receipt,
   assignment, sign-for, contact, completion, callback per ticket) go through ``rebuild`` (decode,
   ledger, fold, cells) from memory — the broker's own read is not in the figure; with the
   CPU of the process and of its fold workers (``--rebuild-workers``), and the peak memory of
   both. ``--facts 0 --apply-events 0`` runs the rebuild case alone. After the load or the
   apply, the rebuild is timed in a fresh process on the same schema, as an operator runs
   ``fengqiao evaluation rebuild`` (``--rebuild-in-process`` times it in this one).
3. **apply**: ``--apply-events`` events through the live handler path (evaluation's staging
   ``Batch`` handler in the inbox's ``Pipeline``: fetch N+1 read and folded while N is written
   and committed, as the consumer does on PostgreSQL; ``--apply-serial`` for one fetch after
   the other, ``service.record_many``), in fetches of 500 as the inbox consumer hands them
   over; with this process's CPU and the PostgreSQL backends' CPU (``/proc``, when the
   database runs on this machine) per event. ``--apply-only`` (or ``--facts 0
   --rebuild-events 0``) runs the apply case alone. ``--statements`` also prints the
   backends' CPU by statement over the apply (``bench/statement_cpu.py``), per event;
   ``--split-writes`` sends the parts of the one write statement (facts, contributions, cell
   update) as statements of their own in the same transaction, to charge each its share.
   ``--facts-fillfactor N`` sets that fillfactor on the facts' and contributions' tables of the
   bench's schema before the apply (what a migration would do; to measure it before writing one).
   ``--sqlite`` runs the apply case alone on a fresh SQLite file instead (the embedded
   default, as ``make run`` has it), one fetch after the other as the consumer does there; the
   writes run on the driver's thread in this process, so its CPU is all of it. ``--apply-batch``
   sets the fetch size (the suite's fetches are smaller than 500).

Before the apply and the rebuild are timed, the database is settled (``--settle``): a
``CHECKPOINT`` and a wait for autovacuum, so that the 10 M load's dirty pages and analyses are
not charged to them. The rebuild's memory is sampled every ``--memory-every`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import sqlalchemy

from bench import statement_cpu
from bench.evaluation_data import City, month_cells
from fengqiao import registry
from services.evaluation import cells, hotspots, ranking, service
from services.evaluation.context import (
    EvaluationContext,
    evaluation_calendar,
)
from services.evaluation.handlers import event_handlers
from services.evaluation.models import CELL_COLUMNS, DIMENSIONS
from services.evaluation.periods import period_of, resolve
from services.evaluation.queries import Filters, figures, grain_for, period_out, sums
from services.evaluation.rebuild import rebuild
from services.evaluation.settings import EvaluationSettings
from shared import bulk, db, heap, taxonomy
from shared.events import dispatch as d
from shared.events import intake as i
from shared.events.base import Event, encode
from shared.geo import city
from shared.inbox import Batch, Pipeline

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
START = date(2025, 1, 1)
DAYS = 730
SCHEMA = os.environ.get("BENCH_EVALUATION_SCHEMA") or f"bench_eval_{uuid.uuid4().hex[:6]}"


def settings_for(url: str, sqlite: Path | None = None) -> EvaluationSettings:
    if sqlite is not None:
        return EvaluationSettings(
            database_url=f"sqlite+aiosqlite:///{sqlite}",
            auth_token_secret=secrets.token_hex(32),
            log_json=False,
            log_level="WARNING",
        )
    return EvaluationSettings(
        database_url="postgresql+asyncpg://" + url.split("://", 1)[1],
        database_schema=SCHEMA,
        auth_token_secret=secrets.token_hex(32),  # the bench serves no requests
        log_json=False,
        log_level="WARNING",
    )


def geography() -> tuple[list[str], list[str]]:
    """Every grid of the demo city and its leaf categories."""
    tree = city()
    grids = [a.code for a in tree.subtree(tree.root.code) if a.tier.value == "grid"]
    return grids, [c.code for c in taxonomy.leaves()]


# The grains the committee queries below read (``cells.grain_for``); the full-dimension grain
# ("day") answers only filter combinations no roll-up keeps, and holds about a row per ticket:
# at 10 M facts some 10 GB, so it is built only when asked for (``--grains``).
QUERY_GRAINS = (
    "month_service",
    "month_category",
    "month_coarse",
    "month_place",
    "day_town",
    "day_coarse",
    "week_coarse",
)


async def load_facts(url: str, n: int, grains: tuple[str, ...]) -> dict[str, float]:
    """Draw ``n`` facts and COPY the cells of ``grains`` in, a month at a time; seconds."""
    conn = await asyncpg.connect(url)
    timings: dict[str, float] = {}
    columns = ["cell_key", "grain", "period_start", *DIMENSIONS, *CELL_COLUMNS]
    try:
        await conn.execute(f"ALTER TABLE {SCHEMA}.eval_cells SET UNLOGGED")
        started = time.monotonic()
        drawn = tuple(g for g in grains if cells.BY_NAME[g].period != "week")
        for grain, rows in month_cells(City.load(), START, DAYS, n, drawn):
            await conn.copy_records_to_table(
                "eval_cells", records=rows, columns=columns, schema_name=SCHEMA
            )
            timings[f"cells_{grain}_rows"] = timings.get(f"cells_{grain}_rows", 0) + len(rows)
        for grain in (g for g in grains if g not in drawn):
            timings[f"cells_{grain}_rows"] = await _weeks_from_days(conn, grain)
        timings["draw_and_copy_s"] = round(time.monotonic() - started, 1)
        print(f"  cells drawn and copied: {timings['draw_and_copy_s']} s", flush=True)
        # Live cells are written in time order (tickets arrive in time), so a period's cells lie
        # together on disk; the bench writes them grain by grain, so it restores that order.
        started = time.monotonic()
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(f"CLUSTER {SCHEMA}.eval_cells USING ix_eval_cells_period")
        await conn.execute(f"VACUUM ANALYZE {SCHEMA}.eval_cells")
        timings["cluster_s"] = round(time.monotonic() - started, 1)
    finally:
        await conn.close()
    return timings


async def _weeks_from_days(conn: asyncpg.Connection, grain: str) -> int:
    """A week grain summed by the database from the day grain keeping the same dimensions (a
    week's cells are its days' sums, as the live apply writes them; weeks cross the months the
    facts are drawn in). The key is any unique text that sorts by period, as the live keys do
    (``cells.cell_key``): the queries do not read it."""
    kept = cells.BY_NAME[grain].dimensions
    days = next(g.name for g in cells.GRAINS if g.period == "day" and g.dimensions == kept)
    dims = ", ".join(DIMENSIONS)
    sums = ", ".join(f"sum({c})" for c in CELL_COLUMNS)
    week = "date_trunc('week', period_start)::date"
    status = await conn.execute(
        f"INSERT INTO {SCHEMA}.eval_cells (cell_key, grain, period_start, {dims},"
        f" {', '.join(CELL_COLUMNS)})"
        f" SELECT to_char({week}, 'YYYYMMDD') || left(md5(concat_ws('|', '{grain}', {week},"
        f" {dims})), 24), '{grain}', {week}, {dims},"
        f" {sums} FROM {SCHEMA}.eval_cells WHERE grain = '{days}' GROUP BY {week}, {dims}"
    )
    return int(status.split()[-1])


@dataclass
class QueryResult:
    name: str
    grain: str
    p50_ms: float
    p99_ms: float
    max_ms: float


async def time_queries(
    settings: EvaluationSettings, repeat: int, grains: tuple[str, ...]
) -> list[QueryResult]:
    """Every committee query, ``repeat`` times each (after one warm-up)."""
    engine = db.create_engine(settings)
    on = START + timedelta(days=DAYS - 45)
    month = period_of("month", on)
    weight = settings.basic_satisfaction_weight
    district = sorted({g[:6] for g in geography()[0]})[0]
    town = sorted({g[:9] for g in geography()[0] if g.startswith(district)})[0]

    Case = tuple[tuple[str, ...], Callable[[], Awaitable[Any]]]

    def fig(period: Any, dimension: str | None = None, **filters: Any) -> Case:
        """A figures query and the grain it sums."""
        chosen = Filters(**filters)
        return (grain_for(period, chosen, dimension),), lambda: figures(
            engine, period=period, filters=chosen, dimension=dimension, basic_weight=weight
        )

    async def rank() -> Any:
        groups = await sums(engine, period=month, filters=Filters(), dimension="department")
        return ranking.rank(
            groups,
            period=period_out(month),
            filters=Filters(),
            unit="department",
            weights=ranking.weights(None),
            min_sample=30,
            basic_weight=weight,
            red_bottom_n=3,
            red_below=None,
            yellow_bottom_n=3,
            yellow_below=None,
        )

    cases: dict[str, Case] = {
        "headline month (city)": fig(month),
        "headline quarter": fig(period_of("quarter", on)),
        "headline year": fig(period_of("year", on)),
        "trend year by month": fig(period_of("year", on), "period"),
        "slice month by department": fig(month, "department"),
        "slice month by district": fig(month, "district"),
        "drill month district→towns": fig(month, "area", area=district),
        "drill month town→villages": fig(month, "area", area=town),
        "slice month by channel": fig(month, "channel"),
        "slice month by leaf category": fig(month, "category"),
        "filter month department+category": fig(month, department=f"T{town}-1", category="01"),
        "headline week": fig(period_of("week", on)),
        "range of 90 days": fig(resolve("month", None, on - timedelta(days=89), on, on)),
        "slice week by department": fig(period_of("week", on), "department"),
        "ranking month by department": (("month_coarse",), rank),
        "hot spots month": (
            ("month_category", "month_place"),
            lambda: hotspots.find(engine, period=month, settings=settings),
        ),
    }
    heap.settle()  # as the started service does
    results = []
    try:
        for name, (needs, run) in cases.items():
            if not set(needs) <= set(grains):
                print(f"  {name}: skipped, {', '.join(needs)} not built", flush=True)
                continue
            await run()
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await run()
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            results.append(
                QueryResult(
                    name,
                    "+".join(needs),
                    round(statistics.median(times), 1),
                    round(p99, 1),
                    round(times[-1], 1),
                )
            )
            print(f"  {name}: p50 {results[-1].p50_ms} ms, p99 {results[-1].p99_ms} ms", flush=True)
    finally:
        await engine.dispose()
    return results


def ticket_events(n_tickets: int, seed: int = 7) -> list[Event]:
    """A realistic mix: receipt, assignment, sign-for, contact, completion, callback."""
    rng = random.Random(seed)
    grids, categories = geography()
    base = datetime(2026, 3, 2, 1, tzinfo=UTC)
    events: list[Event] = []
    for k in range(n_tickets):
        tid, did = f"R{seed}{k:08d}", f"D{seed}{k:08d}-1"
        at = base + timedelta(minutes=rng.randrange(60 * 24 * 200))
        grid, category = rng.choice(grids), rng.choice(categories)
        dept = f"DEPT-{rng.randrange(200):03d}"
        events += [
            i.TicketReceived(
                ticket_id=tid,
                channel="hotline-12345-phone",
                received_at=at,
                occurred_at=at,
                title="t",
                content="c",
                category_code=category,
                location=i.Location(grid_code=grid),
            ),
            d.TicketAssigned(
                ticket_id=tid,
                dispatch_id=did,
                department_code=dept,
                department_tier="town",
                category_code=category,
                channel="hotline-12345-phone",
                occurred_at=at + timedelta(minutes=5),
            ),
            d.DispatchSigned(
                ticket_id=tid,
                dispatch_id=did,
                department_code=dept,
                occurred_at=at + timedelta(minutes=30),
            ),
            d.CitizenContacted(
                ticket_id=tid,
                dispatch_id=did,
                department_code=dept,
                occurred_at=at + timedelta(hours=1),
            ),
            d.DispatchCompleted(
                ticket_id=tid,
                dispatch_id=did,
                department_code=dept,
                result="ok",
                occurred_at=at + timedelta(hours=rng.randrange(2, 72)),
            ),
            i.FeedbackReceived(
                ticket_id=tid,
                feedback_id=f"{tid}-1",
                resolved=True,
                satisfaction="satisfied",
                occurred_at=at + timedelta(days=4),
            ),
        ]
    return events


SUITE_LAG = 100
"""Tickets received between a ticket's receipt and its assignment in the "suite" mix."""


def suite_events(n_events: int, seed: int) -> list[Event]:
    """What evaluation gets under the suite's load (``bench/suite.py``): each ticket's receipt
    and, ``SUITE_LAG`` receipts later, its assignment, interleaved — no department acts on
    them meanwhile."""
    tickets = ticket_events(n_events // 2, seed=seed)
    receipts, assignments = tickets[0::6], tickets[1::6]
    events: list[Event] = []
    for k, receipt in enumerate(receipts):
        events.append(receipt)
        if k >= SUITE_LAG:
            events.append(assignments[k - SUITE_LAG])
    return events + assignments[max(0, len(receipts) - SUITE_LAG) :]


@dataclass
class _Rec:
    value: bytes
    headers: list[tuple[str, bytes]]
    key: bytes


async def time_rebuild(
    settings: EvaluationSettings,
    n_events: int,
    workers: int | None = None,
    *,
    memory_every: float = 2.0,
) -> dict[str, Any]:
    """The rebuild of ``n_events`` from memory, with its CPU (this process's and its fold
    workers') and the peak memory of the process and its workers together (proportional set
    size: a page the workers share with the parent, copy on write, counted once)."""
    events = ticket_events(n_events // 6, seed=1)
    records = [_Rec(r.value, r.headers, r.key) for r in map(encode, events)]
    # What a broker would hold is the records: the event objects they came from (about as
    # large again) would only be memory the rebuild's own must find room beside.
    del events

    async def source() -> AsyncIterator[list[Any]]:
        for start in range(0, len(records), 2000):
            yield records[start : start + 2000]

    options: dict[str, Any] = {} if workers is None else {"workers": workers}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with PeakMemory(memory_every) as memory:
        load = os.getloadavg()
        started, cpu = time.monotonic(), time.process_time()
        report = await rebuild(settings, source=source(), **options)
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return {
        "events": len(records),
        "workers": workers,
        "seconds": round(seconds, 1),
        "cpu_s": round(cpu, 1),  # this process's (decode, fold, roll-up, COPY encoding)
        "workers_cpu_s": round(workers_cpu, 1),  # the fold workers' (ended and waited for)
        # This process and its workers, with inputs; None when not sampled.
        "peak_pss_mb": round(memory.peak / 1024) if memory_every > 0 else None,
        "memory_every_s": memory_every,
        "load_average": (load, os.getloadavg()),
        "events_per_s": round(len(records) / seconds),
        "stages_s": report.seconds,
        "facts": report.facts,
        "cells": report.cells,
    }


async def quiet_database(url: str, patience: float) -> dict[str, float]:
    """Let the case before stop charging the next one: write its dirty pages out now
    (``CHECKPOINT``; after the 10 M load the checkpointer and autovacuum otherwise go on for
    a minute or more, on the same two cores as the timed case) and wait, up to ``patience``
    seconds, for autovacuum workers to finish. Says how long each took."""
    if patience <= 0:
        return {}
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        await conn.execute("CHECKPOINT")
        checkpoint = time.monotonic() - started
        busy = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'autovacuum worker' AND datname = current_database()"
        )
        for _ in range(int(patience)):
            if not await conn.fetchval(busy):
                break
            await asyncio.sleep(1.0)
        waited = time.monotonic() - started - checkpoint
    finally:
        await conn.close()
    print(f"  settled: checkpoint {checkpoint:.1f} s, autovacuum {waited:.1f} s", flush=True)
    return {"checkpoint_s": round(checkpoint, 1), "autovacuum_s": round(waited, 1)}


def rebuild_apart(args: argparse.Namespace) -> dict[str, Any]:
    """The rebuild case in a fresh process on this run's schema, as an operator runs
    `fengqiao evaluation rebuild`: not in the process that loaded 10 M facts and applied
    events, whose heap, page tables (copied at each fork of the fold workers) and caches the
    command would not have."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rebuild.json"
        command = [
            sys.executable,
            "-m",
            "bench.evaluation",
            "--postgres",
            args.postgres,
            "--facts=0",
            "--apply-events=0",
            f"--rebuild-events={args.rebuild_events}",
            "--settle=0",  # settled just before, here
            f"--memory-every={args.memory_every}",
            "--keep",  # the schema is this run's: this process drops it
            f"--out={out}",
        ]
        if args.rebuild_workers is not None:
            command.append(f"--rebuild-workers={args.rebuild_workers}")
        env = {**os.environ, "BENCH_EVALUATION_SCHEMA": SCHEMA}
        subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        rebuilt: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))["rebuild"]
    return {**rebuilt, "process": "fresh"}


class PeakMemory:
    """Samples the proportional set size of this process and its children (``/proc``) every
    ``every`` seconds in a thread; ``peak`` is the largest sum seen, in KB. Not more often:
    reading ``smaps_rollup`` walks every page of a process of several GB (a few hundredths of
    a second each time, in this process's CPU)."""

    def __init__(self, every: float = 2.0) -> None:
        self.peak = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        if self._every <= 0:
            return
        me = os.getpid()
        while not self._stop.wait(self._every):
            pids = [me, *(pid for pid in _pids() if _parent(pid) == me)]
            self.peak = max(self.peak, sum(map(_pss_kb, pids)))


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def time_apply(
    settings: EvaluationSettings,
    n_events: int,
    *,
    pipelined: bool = True,
    seed: int = 2,
    batch_size: int = 500,
    mix: str = "stages",
) -> dict[str, Any]:
    """The live path as the inbox consumer drives it: fetches of 500 handed to evaluation's
    batch handler, pipelined (the next fetch staged while the one before is written and
    committed, ``shared.inbox.Pipeline``) unless ``pipelined`` is False. The events go stage
    by stage (every ticket's receipt, then every assignment, ...), so a batch holds 500
    different tickets and every event costs a refold of its ticket: the worst case for
    batching, and what a steady stream looks like. ``mix`` "suite": what the whole suite's
    load brings instead (``suite_events``)."""
    if mix == "suite":
        events = suite_events(n_events, seed)
    else:
        per_ticket = 6
        tickets = ticket_events(n_events // per_ticket, seed=seed)
        events = [tickets[k] for s in range(per_ticket) for k in range(s, len(tickets), per_ticket)]
    engine = db.create_engine(settings)
    backends = [] if settings.is_sqlite else backend_pids(engine)
    sessions = db.session_factory(engine)
    calendar = evaluation_calendar(settings)
    (handler,) = {
        id(h): h for h in event_handlers(cast(EvaluationContext, _Bench(calendar))).values()
    }.values()
    assert isinstance(handler, Batch)
    # The started service's collector settings; its start-up heap is frozen too, but freezing
    # here would also hide from the collector the events the service only gets one by one.
    heap.tune()
    folds = dict(service.FOLDS)
    statement_cpu.measuring = True
    threads = thread_cpu()
    started, cpu = time.monotonic(), time.process_time()
    assert handler.stage is not None
    staging = 0.0  # wall time spent staging (reads, folds, cell moves)
    waited = 0.0  # pipelined: time a staged fetch then waited for the one in flight
    try:
        size = batch_size
        batches = [events[start : start + size] for start in range(0, len(events), size)]
        if pipelined:
            pipe = Pipeline(sessions)
            for batch in batches:
                at = time.monotonic()
                staged = await pipe.stage(handler, batch)
                staging += time.monotonic() - at
                at = time.monotonic()
                await pipe.settle()
                waited += time.monotonic() - at
                pipe.launch(staged)
            at = time.monotonic()
            await pipe.settle()
            waited += time.monotonic() - at
        else:
            for batch in batches:  # handler.many, its two halves timed apart
                async with sessions() as session, session.begin():
                    at = time.monotonic()
                    stage = await handler.stage(batch, session=session, carry=None)
                    staging += time.monotonic() - at
                    await stage.write(session)
        cpu = time.process_time() - cpu
        db_cpu = sum(map(process_cpu, backends))  # before the connections close
        # The threads beside the event loop's: on SQLite the driver's, where the database works.
        others = sum(v - threads.get(k, 0.0) for k, v in thread_cpu().items())
    finally:
        statement_cpu.measuring = False
        await engine.dispose()
    seconds = time.monotonic() - started
    return {
        "events": len(events),
        "batch": batch_size,
        "database": engine.dialect.name,
        "pipelined": pipelined,
        "seconds": round(seconds, 1),
        # Serial: seconds = staging + writing. Pipelined: the writes overlap the next staging,
        # and seconds = staging + the wait for the fetch in flight.
        "staging_s": round(staging, 1),
        "waited_for_commit_s": round(waited, 1),
        "events_per_s": round(len(events) / seconds),
        # On SQLite the database's work runs on the driver's thread: counted here.
        "python_cpu_ms_per_event": round(cpu * 1000 / len(events), 3),
        "postgres_cpu_ms_per_event": round(db_cpu * 1000 / len(events), 3),
        "other_threads_cpu_ms_per_event": round(others * 1000 / len(events), 3),
        "load_average": os.getloadavg(),
        # Tickets whose new events were folded onto their state of before, and tickets whose
        # whole ledger was folded (no state kept, or one the ledger did not bear out).
        "ticket_folds": {k: v - folds.get(k, 0) for k, v in service.FOLDS.items()},
    }


FILLED = ("ticket_facts", "dispatch_facts", "case_facts", "eval_contributions")


async def facts_fillfactor(url: str, fill: int) -> None:
    """The tables a fetch's upserts rewrite, made to leave room on each page (of pages written
    from now on), so that a fact's next version can be a heap-only update."""
    sql = "; ".join(f"ALTER TABLE {SCHEMA}.{t} SET (fillfactor = {int(fill)})" for t in FILLED)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)  # one simple query, the statements in order
    finally:
        await conn.close()


def split_writes() -> None:
    """``bulk.write_ready`` sending each made-ready write as a statement of its own (the same
    writes, in the same transaction), so that ``--statements`` tells their costs apart."""
    together = bulk.write_ready

    async def apart(session: Any, upserts: Any, adds: bulk.SparseAdd | None = None) -> None:
        for one in upserts:
            await together(session, [one], None)
        await together(session, [], adds)

    bulk.write_ready = apart  # type: ignore[assignment]


class _Bench:
    """What evaluation's handlers need of the service's context."""

    def __init__(self, calendar: Any) -> None:
        self.calendar = calendar


def backend_pids(engine: Any) -> list[int]:
    """The PostgreSQL backend process of each connection the engine opens (filled as it
    opens them), so that the database's CPU can be read from ``/proc``."""
    pids: list[int] = []

    @sqlalchemy.event.listens_for(engine.sync_engine, "connect")
    def remember(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        pids.append(cursor.fetchone()[0])
        cursor.close()

    return pids


def thread_cpu() -> dict[int, float]:
    """User and system CPU seconds of each thread of this process but the main one, by id."""
    main = os.getpid()
    tids = (int(tid) for tid in os.listdir("/proc/self/task"))
    return {tid: process_cpu(main, tid) for tid in tids if tid != main}


def process_cpu(pid: int, thread: int | None = None) -> float:
    """User and system CPU seconds a local process (or one of its threads) has used so far (0 if
    it is not local)."""
    try:
        where = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
        fields = Path(where).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def apply_on_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    """The apply case alone on a fresh SQLite file in a directory of its own, removed after."""
    with tempfile.TemporaryDirectory(prefix="bench-eval-sqlite-") as directory:
        settings = settings_for(args.postgres, Path(directory) / "evaluation.db")
        await registry.upgrade_async("evaluation", settings)
        print(f"apply {args.apply_events:,} events on SQLite", flush=True)
        applied = await time_apply(
            settings,
            args.apply_events,
            pipelined=False,
            seed=args.apply_seed,
            batch_size=args.apply_batch,
            mix=args.apply_mix,
        )
        return {"facts": 0, "apply": applied}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=10_000_000)
    parser.add_argument("--rebuild-events", type=int, default=1_000_000)
    parser.add_argument("--apply-events", type=int, default=20_000)
    parser.add_argument(
        "--rebuild-workers",
        type=int,
        default=None,
        help="fold processes of the rebuild (default: the rebuild's own default)",
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--apply-only", action="store_true", help="the apply case alone (no facts, no rebuild)"
    )
    parser.add_argument(
        "--apply-serial", action="store_true", help="apply one fetch after the other (no overlap)"
    )
    parser.add_argument(
        "--apply-seed",
        type=int,
        default=2,
        help="the apply's tickets (another seed, other tickets: runs beside a --reuse schema)",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="PostgreSQL: the apply's backend CPU by statement, per event",
    )
    parser.add_argument(
        "--facts-fillfactor",
        type=int,
        default=None,
        help="apply: this fillfactor on the facts' and contributions' tables first (a trial)",
    )
    parser.add_argument(
        "--split-writes",
        action="store_true",
        help="the apply's write statement sent as one statement a table (with --statements)",
    )
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="the apply case alone on a fresh SQLite file (one fetch after the other)",
    )
    parser.add_argument("--apply-batch", type=int, default=500, help="events a fetch")
    parser.add_argument(
        "--apply-mix",
        choices=("stages", "suite"),
        default="stages",
        help="stages: six events a ticket, stage after stage; suite: a receipt and an "
        "assignment a ticket, interleaved, as the whole suite's load brings them",
    )
    parser.add_argument(
        "--postgres", default=os.environ.get("FENGQIAO_TEST_POSTGRES_URL", DEFAULT_PG)
    )
    parser.add_argument(
        "--grains", default=",".join(QUERY_GRAINS), help="cell grains to build (comma list)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema (to EXPLAIN)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the queries on the cells a --keep run left (BENCH_EVALUATION_SCHEMA names it)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=120.0,
        help="before the apply and the rebuild are timed: CHECKPOINT, then wait up to this many "
        "seconds for autovacuum to finish (0: neither)",
    )
    parser.add_argument(
        "--memory-every",
        type=float,
        default=2.0,
        help="seconds between two samples of the rebuild's memory (0: not sampled)",
    )
    parser.add_argument(
        "--rebuild-in-process",
        action="store_true",
        help="time the rebuild in this process even after the load or the apply (default: in a "
        "fresh process of its own, as `fengqiao evaluation rebuild` runs)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/evaluation.json")
    args = parser.parse_args()
    if args.sqlite:
        results = await apply_on_sqlite(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        print(json.dumps(results, indent=2, default=str))
        return
    if args.apply_only:
        args.facts = args.rebuild_events = 0
    if args.statements:
        statement_cpu.install()
    if args.split_writes:
        split_writes()
    settings = settings_for(args.postgres)
    await registry.upgrade_async("evaluation", settings)  # a no-op on a kept schema
    results: dict[str, Any] = {"facts": args.facts, "schema": SCHEMA}
    if args.facts_fillfactor is not None:
        await facts_fillfactor(args.postgres, args.facts_fillfactor)
        results["facts_fillfactor"] = args.facts_fillfactor
    try:
        if args.facts:
            print(f"loading {args.facts:,} ticket facts into {SCHEMA}", flush=True)
            grains = tuple(args.grains.split(","))
            results["grains"] = grains
            if not args.reuse:
                results["load"] = await load_facts(args.postgres, args.facts, grains)
            print("queries", flush=True)
            timed = await time_queries(settings, args.repeat, grains)
            results["queries"] = [q.__dict__ for q in timed]
        if args.apply_events:
            results["settled_before_apply"] = await quiet_database(args.postgres, args.settle)
            print(f"apply {args.apply_events:,} events", flush=True)
            results["apply"] = await time_apply(
                settings,
                args.apply_events,
                pipelined=not args.apply_serial,
                seed=args.apply_seed,
                batch_size=args.apply_batch,
                mix=args.apply_mix,
            )
            if args.statements:
                statement_cpu.report(results["apply"]["events"], "event")
        if args.rebuild_events:
            results["settled_before_rebuild"] = await quiet_database(args.postgres, args.settle)
            print(f"rebuild {args.rebuild_events:,} events", flush=True)
            if (args.facts or args.apply_events) and not args.rebuild_in_process:
                results["rebuild"] = await asyncio.to_thread(rebuild_apart, args)
            else:
                results["rebuild"] = await time_rebuild(
                    settings,
                    args.rebuild_events,
                    args.rebuild_workers,
                    memory_every=args.memory_every,
                )
    finally:
        if not args.keep:
            conn = await asyncpg.connect(args.postgres)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
            await conn.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
