"""Evaluation benchmark: committee queries over millions of ticket facts, rebuild, apply rate.

    python -m bench.evaluation [--facts 10000000] [--rebuild-events 1000000]
                               [--apply-events 20000] [--repeat 30] [--postgres URL]
                               [--out bench/results/evaluation.json]

On PostgreSQL (``--postgres``, default ``FENGQIAO_TEST_POSTGRES_URL`` or the local ``test``
database), in a schema of its own that is dropped afterwards:

1. **queries**: ``--facts`` synthetic ticket facts (two years, 4 districts, their towns and grids,
   200 departments, 72 channels, every leaf category) are copied in, and the cells are built from
   them with SQL that mirrors ``cells.ticket_counters`` (the synthetic facts have no dispatches:
   the dispatch counters are derived per ticket). Then every committee query the dashboard and
   the API make is run ``--repeat`` times through the same functions the routes call; p50 and
   p99 per query.
2. **rebuild**: ``--rebuild-events`` encoded CloudEvents records (a realistic mix: receipt,
   assignment, sign-for, contact, completion, callback per ticket) go through ``rebuild`` (decode,
   ledger, fold, cells) from memory — the broker's own read is not in the figure.
3. **apply**: ``--apply-events`` events through the live handler path (``service.record_many``),
   in fetches of 500 as the inbox consumer hands them over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from fengqiao import registry
from services.evaluation import hotspots, ranking, service
from services.evaluation.context import evaluation_calendar
from services.evaluation.periods import period_of, resolve
from services.evaluation.queries import Filters, figures, period_out, sums
from services.evaluation.rebuild import rebuild
from services.evaluation.settings import EvaluationSettings
from shared import db, taxonomy
from shared.events import dispatch as d
from shared.events import intake as i
from shared.events.base import Event, encode
from shared.geo import city

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
START = date(2025, 1, 1)
DAYS = 730
SCHEMA = os.environ.get("BENCH_EVALUATION_SCHEMA") or f"bench_eval_{uuid.uuid4().hex[:6]}"


def settings_for(url: str) -> EvaluationSettings:
    return EvaluationSettings(
        database_url="postgresql+asyncpg://" + url.split("://", 1)[1],
        database_schema=SCHEMA,
        log_json=False,
        log_level="WARNING",
        # A PostgreSQL deployment refuses the development secrets; a benchmark run makes its own.
        auth_token_secret=secrets.token_hex(32),
    )


def geography() -> tuple[list[str], list[str]]:
    """Every grid of the demo city and its leaf categories."""
    tree = city()
    grids = [a.code for a in tree.subtree(tree.root.code) if a.tier.value == "grid"]
    return grids, [c.code for c in taxonomy.leaves()]


FACT_COLUMNS = (
    "ticket_id",
    "kind",
    "channel",
    "category_code",
    "area_code",
    "district_code",
    "town_code",
    "village_code",
    "grid_code",
    "is_enterprise",
    "is_repeat",
    "received_at",
    "dispatched_at",
    "completed_at",
    "department_code",
    "department_tier",
    "handling_line",
    "completed",
    "completed_late",
    "handling_centidays",
    "dispatches",
    "returns",
    "transfers",
    "extensions",
    "escalations",
    "max_escalation_level",
    "whistles",
    "supervised",
    "focused",
    "reopened",
    "mediated",
    "resolved",
    "satisfaction",
    "callback_counted",
)


# Departments follow the area, as in a real city: the town office (one of five desks per town,
# by category) 60 %, a district bureau (by top-level category) 25 %, the village committee 15 %.
FACTS_SQL = """
INSERT INTO {schema}.ticket_facts ({columns})
SELECT 'B' || lpad(g::text, 10, '0'), 'appeal', 'ch-' || (g % 72), cat, grid, left(grid, 6),
  left(grid, 9), left(grid, 12), grid, g % 17 = 0, g % 23 = 0, received, received,
  CASE WHEN done THEN received + handling * interval '1 day' END,
  CASE WHEN who < 0.6 THEN 'T' || left(grid, 9) || '-' || (left(cat, 2)::int % 5)
       WHEN who < 0.85 THEN 'D' || left(grid, 6) || '-' || left(cat, 2)
       ELSE 'V' || left(grid, 12) END,
  CASE WHEN who < 0.6 THEN 'town' WHEN who < 0.85 THEN 'district' ELSE 'village' END,
  'normal', done, CASE WHEN done THEN late END,
  CASE WHEN done THEN (handling * 100)::int END, 1, (g % 50 = 0)::int, (g % 40 = 0)::int,
  (g % 30 = 0)::int, (g % 60 = 0)::int, (g % 60 = 0)::int, (g % 200 = 0)::int, false, false,
  false, false, CASE WHEN answered THEN resolved END,
  CASE WHEN answered THEN CASE WHEN sat < 0.9 THEN 'satisfied'
    WHEN sat < 0.98 THEN 'basically_satisfied' ELSE 'dissatisfied' END END, answered
FROM (
  SELECT g, $1::text[] AS grids, $2::text[] AS cats,
    ($1::text[])[1 + floor(random() * array_length($1::text[], 1))::int] AS grid,
    ($2::text[])[1 + floor(random() * array_length($2::text[], 1))::int] AS cat,
    random() AS who, random() AS sat,
    timestamptz '{start}' + floor(random() * {days} * 1440) * interval '1 minute' AS received,
    random() < 0.95 AS done, random() < 0.02 AS late,
    -- a gamma(2, 0.9)-like handling time: the sum of two exponentials
    0.9 * (-ln(1 - random()) - ln(1 - random())) AS handling,
    random() < 0.76 AS answered, random() < 0.97 AS resolved
  FROM generate_series($3::bigint, $4::bigint) g
) t
"""


INNER_SQL = """
  SELECT {period} AS p, kind, coalesce(department_code, '') AS department_code,
    coalesce(department_tier, '') AS department_tier, coalesce(district_code, '') AS district_code,
    coalesce(town_code, '') AS town_code, {village} AS village_code, {grid} AS grid_code,
    {channel} AS channel, left(category_code, 2) AS category_top, {category} AS category_code,
    {line} AS handling_line, {enterprise} AS enterprise, f.completed, f.completed_late,
    f.callback_counted, f.resolved, f.satisfaction, f.is_repeat, f.returns, f.transfers,
    f.extensions, f.escalations, f.handling_centidays
  FROM {schema}.ticket_facts f {where}
"""
CELL_SQL = """
INSERT INTO {schema}.eval_cells (cell_key, grain, period_start, {dims}, {counters})
SELECT md5(concat_ws('|', '{grain}', p, {dims})), '{grain}', p, {dims}, {sums}
FROM ({inner}) t
GROUP BY p, {dims}
"""
HIST_SQL = """
INSERT INTO {schema}.eval_handling (cell_key, centidays, grain, period_start, n)
SELECT md5(concat_ws('|', '{grain}', p, {dims})), handling_centidays, '{grain}', p, count(*)
FROM ({inner}) t
GROUP BY p, {dims}, handling_centidays
"""
COUNTER_SQL = {
    "tickets": "count(*)",
    "received": "count(*)",
    "dispatched": "count(*)",
    "completed": "count(*) FILTER (WHERE completed)",
    "completed_on_time": "count(*) FILTER (WHERE completed AND NOT completed_late)",
    "callbacks": "count(*) FILTER (WHERE callback_counted)",
    "resolved": "count(*) FILTER (WHERE callback_counted AND resolved)",
    "satisfied": "count(*) FILTER (WHERE callback_counted AND satisfaction = 'satisfied')",
    "basically_satisfied": "count(*) FILTER (WHERE callback_counted AND "
    "satisfaction = 'basically_satisfied')",
    "dissatisfied": "count(*) FILTER (WHERE callback_counted AND satisfaction = 'dissatisfied')",
    "repeats": "count(*) FILTER (WHERE is_repeat)",
    "returned": "count(*) FILTER (WHERE returns > 0)",
    "transferred": "count(*) FILTER (WHERE transfers > 0)",
    "extended": "count(*) FILTER (WHERE extensions > 0)",
    "escalated": "count(*) FILTER (WHERE escalations > 0)",
    "one_time": "count(*) FILTER (WHERE completed AND returns = 0 AND NOT is_repeat)",
    "closed_village": "count(*) FILTER (WHERE completed AND department_tier IN "
    "('village', 'grid'))",
    "closed_town": "count(*) FILTER (WHERE completed AND department_tier IN "
    "('town', 'village', 'grid'))",
    "handling_centidays": "coalesce(sum(handling_centidays) FILTER (WHERE completed), 0)",
    "dispatches": "count(*)",
    "sign_due": "count(*)",
    "sign_on_time": "count(*) FILTER (WHERE NOT coalesce(completed_late, false))",
    "contact_due": "count(*)",
    "contact_on_time": "count(*)",
}
DIMS = (
    "kind",
    "department_code",
    "department_tier",
    "district_code",
    "town_code",
    "village_code",
    "grid_code",
    "channel",
    "category_top",
    "category_code",
    "handling_line",
    "enterprise",
)


def grain_sql(template: str, grain: str) -> str:
    """Cells (or histogram rows) of one grain, summed from the facts."""
    fine = grain != "month_coarse"
    period = "(received_at AT TIME ZONE 'Asia/Shanghai')::date"
    if grain != "day":
        period = f"date_trunc('month', {period})::date"
    inner = INNER_SQL.format(
        schema=SCHEMA,
        period=period,
        village="coalesce(village_code, '')" if fine else "''",
        grid="coalesce(grid_code, '')" if fine else "''",
        channel="coalesce(channel, '')" if fine else "''",
        category="coalesce(category_code, '')" if fine else "''",
        line="coalesce(handling_line, '')" if fine else "''",
        enterprise="CASE WHEN is_enterprise THEN '1' ELSE '0' END" if fine else "''",
        where="WHERE completed" if template is HIST_SQL else "",
    )
    return template.format(
        schema=SCHEMA,
        grain=grain,
        dims=", ".join(DIMS),
        counters=", ".join(COUNTER_SQL),
        sums=", ".join(COUNTER_SQL.values()),
        inner=inner,
    )


async def load_facts(url: str, n: int, grains: tuple[str, ...]) -> dict[str, float]:
    """Generate ``n`` facts inside PostgreSQL and build the cells; seconds per step."""
    grids, categories = geography()
    conn = await asyncpg.connect(url)
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        sql = FACTS_SQL.format(
            schema=SCHEMA,
            columns=", ".join(FACT_COLUMNS),
            days=DAYS,
            start=f"{START.isoformat()} 00:00:00+08",
        )
        chunk = 1_000_000
        have = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.ticket_facts")
        for first in range(have, n, chunk):
            last = min(n, first + chunk) - 1
            await conn.execute(sql, grids, categories, first, last)
            print(f"  facts {last + 1:,}/{n:,}", flush=True)
        timings["copy_facts_s"] = round(time.monotonic() - started, 1)
        # Hash aggregation in memory rather than sorting millions of groups on disk.
        await conn.execute("SET work_mem = '1GB'")
        await conn.execute(f"DELETE FROM {SCHEMA}.eval_cells; DELETE FROM {SCHEMA}.eval_handling")
        for grain in grains:
            started = time.monotonic()
            await conn.execute(grain_sql(CELL_SQL, grain))
            await conn.execute(grain_sql(HIST_SQL, grain))
            timings[f"cells_{grain}_s"] = round(time.monotonic() - started, 1)
            print(f"  cells {grain}: {timings[f'cells_{grain}_s']} s", flush=True)
        # Live cells are written in time order (tickets arrive in time), so a period's cells lie
        # together on disk; the bench builds them grain by grain, so it restores that order.
        started = time.monotonic()
        await conn.execute(
            f"SET maintenance_work_mem = '1GB'; "
            f"CLUSTER {SCHEMA}.eval_cells USING ix_eval_cells_period; "
            f"CLUSTER {SCHEMA}.eval_handling USING ix_eval_handling_period; "
            f"ANALYZE {SCHEMA}.eval_cells; ANALYZE {SCHEMA}.eval_handling"
        )
        timings["cluster_s"] = round(time.monotonic() - started, 1)
        for grain in grains:
            count = await conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.eval_cells WHERE grain = $1", grain
            )
            timings[f"cells_{grain}_rows"] = int(count)
    finally:
        await conn.close()
    return timings


@dataclass
class QueryResult:
    name: str
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

    def fig(
        period: Any, dimension: str | None = None, **filters: Any
    ) -> Callable[[], Awaitable[Any]]:
        return lambda: figures(
            engine,
            period=period,
            filters=Filters(**filters),
            dimension=dimension,
            basic_weight=weight,
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

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
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
        "headline week (day cells)": fig(period_of("week", on)),
        "range 90 days (day cells)": fig(resolve("month", None, on - timedelta(days=89), on, on)),
        "ranking month by department": rank,
        "hot spots month": lambda: hotspots.find(engine, period=month, settings=settings),
    }
    if "day" not in grains or "month" not in grains:
        # Only the cases the built grains answer (the headline, ranking and drill-downs).
        keep = (
            "headline month",
            "headline quarter",
            "headline year",
            "trend",
            "by department",
            "by district",
            "district→towns",
            "department+category",
            "ranking",
        )
        cases = {k: v for k, v in cases.items() if k.startswith(keep) or any(x in k for x in keep)}
    results = []
    try:
        for name, run in cases.items():
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
                    name, round(statistics.median(times), 1), round(p99, 1), round(times[-1], 1)
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


@dataclass
class _Rec:
    value: bytes
    headers: list[tuple[str, bytes]]
    key: bytes


async def time_rebuild(settings: EvaluationSettings, n_events: int) -> dict[str, Any]:
    events = ticket_events(n_events // 6, seed=1)
    records = [_Rec(r.value, r.headers, r.key) for r in map(encode, events)]

    async def source() -> AsyncIterator[list[Any]]:
        for start in range(0, len(records), 2000):
            yield records[start : start + 2000]

    started = time.monotonic()
    report = await rebuild(settings, source=source())
    seconds = time.monotonic() - started
    return {
        "events": len(records),
        "seconds": round(seconds, 1),
        "events_per_s": round(len(records) / seconds),
        "stages_s": report.seconds,
        "facts": report.facts,
        "cells": report.cells,
    }


async def time_apply(settings: EvaluationSettings, n_events: int) -> dict[str, Any]:
    """The live path as the inbox consumer drives it: fetches of 500 handed to the batch
    handler (``service.record_many``). The events go stage by stage (every ticket's receipt,
    then every assignment, ...), so a batch holds 500 different tickets and every event costs a
    refold of its ticket: the worst case for batching, and what a steady stream looks like."""
    per_ticket = 6
    tickets = ticket_events(n_events // per_ticket, seed=2)
    events = [tickets[k] for s in range(per_ticket) for k in range(s, len(tickets), per_ticket)]
    engine = db.create_engine(settings)
    sessions = db.session_factory(engine)
    calendar = evaluation_calendar(settings)
    started = time.monotonic()
    try:
        for start in range(0, len(events), 500):
            async with sessions() as session, session.begin():
                batch = events[start : start + 500]
                await service.record_many(session=session, events=batch, calendar=calendar)
    finally:
        await engine.dispose()
    seconds = time.monotonic() - started
    return {
        "events": len(events),
        "batch": 500,
        "seconds": round(seconds, 1),
        "events_per_s": round(len(events) / seconds),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=10_000_000)
    parser.add_argument("--rebuild-events", type=int, default=1_000_000)
    parser.add_argument("--apply-events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--postgres", default=os.environ.get("FENGQIAO_TEST_POSTGRES_URL", DEFAULT_PG)
    )
    parser.add_argument(
        "--grains", default="day,month,month_coarse", help="cell grains to build (comma list)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema (to EXPLAIN)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/evaluation.json")
    args = parser.parse_args()
    settings = settings_for(args.postgres)
    await registry.upgrade_async("evaluation", settings)  # a no-op on a kept schema
    results: dict[str, Any] = {"facts": args.facts, "schema": SCHEMA}
    try:
        if args.facts:
            print(f"loading {args.facts:,} ticket facts into {SCHEMA}", flush=True)
            grains = tuple(args.grains.split(","))
            results["grains"] = grains
            results["load"] = await load_facts(args.postgres, args.facts, grains)
            print("queries", flush=True)
            timed = await time_queries(settings, args.repeat, grains)
            results["queries"] = [q.__dict__ for q in timed]
        if args.apply_events:
            print(f"apply {args.apply_events:,} events", flush=True)
            results["apply"] = await time_apply(settings, args.apply_events)
        if args.rebuild_events:
            print(f"rebuild {args.rebuild_events:,} events", flush=True)
            results["rebuild"] = await time_rebuild(settings, args.rebuild_events)
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
