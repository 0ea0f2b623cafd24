"""Evaluation's apply as the whole suite feeds it: each ticket's receipt, then its assignment a
few receipts later, every ticket of one day in the demo city — so that, as in the suite, a
share of the tickets has its receipt in one fetch and its assignment in the next.

    python -m bench.evaluation_split [--events 24000] [--lag 100] [--batch 500]
                                     [--postgres URL] [--out FILE]

``--lag``: receipts between a ticket's receipt and its assignment (0: both in one fetch, but
for the ticket the fetch ends on). With fetches of ``--batch`` events, about ``2 × lag ÷ batch``
of the tickets are split over two fetches (~0.4 at the defaults; ~0.34 in the suite's runs).
Unlike ``bench.evaluation --apply-mix suite`` (tickets over 200 days and 200 departments), the
tickets here share one day and fewer grids, categories and departments; still sparser than the
suite's (~5 cells created a ticket, against ~1 in the suite's runs).

The pipelined path of ``bench.evaluation.time_apply``; reports its CPU per event and per ticket
and what the cells' and facts' tables counted (rows inserted, updated, deleted) per ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_EVALUATION_SCHEMA", f"evalsuite_split_{uuid.uuid4().hex[:6]}")

import asyncpg

from bench import evaluation as bench
from fengqiao import registry
from shared.events import intake as i
from shared.events.base import Event

TABLES = ("eval_cells", "ticket_facts", "dispatch_facts", "eval_contributions", "eval_ledger")


def one_day(tickets: list[Event], seed: int) -> list[Event]:
    """``bench.evaluation.ticket_events``' tickets (six events each), their receipts and
    assignments moved to one day, 2 ms apart (assigned 150 ms after), in 400 of the city's
    grids, 60 categories and 60 departments; the other four events left as they were."""
    rng = random.Random(seed)
    grids, categories = bench.geography()
    grids, categories = rng.sample(grids, min(400, len(grids))), categories[:60]
    base = datetime(2026, 12, 6, 2, tzinfo=UTC)
    events = list(tickets)
    for k in range(len(events) // 6):
        at, category = base + timedelta(milliseconds=k * 2), rng.choice(categories)
        events[6 * k] = events[6 * k].model_copy(
            update={
                "occurred_at": at,
                "received_at": at,
                "channel": rng.choice(("hotline-12345-phone", "web", "app")),
                "category_code": category,
                "location": i.Location(grid_code=rng.choice(grids)),
            }
        )
        events[6 * k + 1] = events[6 * k + 1].model_copy(
            update={
                "occurred_at": at + timedelta(milliseconds=150),
                "category_code": category,
                "department_code": f"DEPT-{rng.randrange(60):03d}",
                "department_tier": rng.choice(("district", "town", "village")),
            }
        )
    return events


async def table_counts(url: str, schema: str) -> dict[str, dict[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del "
            "FROM pg_stat_user_tables WHERE schemaname = $1",
            schema,
        )
    finally:
        await conn.close()
    return {
        r["relname"]: {"ins": r[1], "upd": r[2], "hot": r[3], "del": r[4]}
        for r in rows
        if r["relname"] in TABLES
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=24_000)
    parser.add_argument("--lag", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--serial", action="store_true", help="one fetch after the other")
    parser.add_argument(
        "--postgres", default=os.environ.get("FENGQIAO_TEST_POSTGRES_URL", bench.DEFAULT_PG)
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--statements", action="store_true", help="the backends' CPU by statement, per event"
    )
    args = parser.parse_args()
    if args.statements:
        bench.statement_cpu.install()
        bench.split_writes()
    # ``bench.evaluation``'s "suite" mix (``suite_events``) on these tickets, at this lag.
    drawn = bench.ticket_events
    bench.ticket_events = lambda n, seed=7: one_day(drawn(n, seed), seed)  # type: ignore[assignment]
    bench.SUITE_LAG = args.lag
    settings = bench.settings_for(args.postgres)
    await registry.upgrade_async("evaluation", settings)
    try:
        applied = await bench.time_apply(
            settings,
            args.events,
            pipelined=not args.serial,
            seed=args.seed,
            batch_size=args.batch,
            mix="suite",
        )
        if args.statements:
            bench.statement_cpu.report(applied["events"], "event")
        await asyncio.sleep(0.7)  # the statistics collector's last report
        counts = await table_counts(args.postgres, bench.SCHEMA)
    finally:
        conn = await asyncpg.connect(args.postgres)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{bench.SCHEMA}" CASCADE')
        await conn.close()
    tickets = args.events // 2
    per_ticket: dict[str, Any] = {
        t: {k: round(v / tickets, 3) for k, v in c.items()} for t, c in counts.items()
    }
    results = {
        "lag": args.lag,
        "tickets": tickets,
        "apply": applied,
        "python_cpu_ms_per_ticket": round(applied["python_cpu_ms_per_event"] * 2, 3),
        "postgres_cpu_ms_per_ticket": round(applied["postgres_cpu_ms_per_event"] * 2, 3),
        "rows_per_ticket": per_ticket,
    }
    text = json.dumps(results, indent=2, default=str)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    asyncio.run(main())
