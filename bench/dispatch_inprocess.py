"""Dispatch's CPU per ticket in one process, without a broker: its consumer's share of a ticket
through the suite, less what the neighbours on a shared machine do to a suite run's rate.

    python -m bench.dispatch_inprocess [--count 12000] [--batch 500] [--database sqlite|postgres]
                                       [--postgres URL] [--schema-prefix P] [--broker]
                                       [--statements] [--warm]

Received tickets of the whole-suite benchmark's kinds (its categories, grids of the demo city,
~1 KB texts) are encoded as intake's records and handed to dispatch's own inbox consumer a fetch
at a time, as a fetch of ``--batch`` records would be: decoding, routing (whose read of the
routed tickets refuses a redelivered one: received tickets get no inbox row), clocks, the rows
and events written set-wise, the commit. Prints tickets per second of wall time and this
process's CPU milliseconds per ticket (on PostgreSQL its backends' too; with
``--statements`` their CPU statement by statement, ``bench/statement_cpu.py``). Without
``--broker`` the relay has no broker to publish to and waits, so publishing is left out; with
it, an embedded broker is started and the clock stops when the relay has published every event
the tickets caused. ``--warm`` first routes tickets of the same kinds (category, grid, text;
other ticket ids) in fetches of 500, so the measured fetches meet the routing memo as a long run
does (the suite's 1,872 leads are met again and again in a run of minutes) rather than
missing it for about a third of the tickets.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import ConsumerRecord
from sqlalchemy import func, select

from bench import statement_cpu
from bench.intake import POSTGRES_URL, drop_schema
from bench.intake_inprocess import run_in_process
from bench.suite import ASSIGNED_PROBLEMS, DETAILS, BackendSampler
from fengqiao.registry import upgrade_async
from services.dispatch.app import create_app
from services.dispatch.models import outbox_table
from services.dispatch.settings import DispatchSettings
from shared import geo
from shared.events.base import Record, encode, utcnow
from shared.events.intake import Citizen, Location, TicketReceived
from shared.outbox import is_pending


def grids() -> list[geo.Area]:
    """The grids of the demo city the suite's addresses resolve to."""
    return [a for a in geo.areas().values() if a.tier is geo.Tier.GRID and a.roads and a.parent]


def records(count: int, *, seed: int = 13) -> list[ConsumerRecord]:  # type: ignore[type-arg]
    """``count`` received tickets as the consumer gets them from the intake topic."""
    rnd = random.Random(seed)
    places = grids()
    out: list[ConsumerRecord] = []  # type: ignore[type-arg]
    for n in range(count):
        category, title, text = rnd.choice(ASSIGNED_PROBLEMS)
        grid = rnd.choice(places)
        content = text.format(place=grid.name_zh, n=rnd.randint(2, 9)) + "".join(
            rnd.sample(DETAILS, 6)
        )
        event = TicketReceived(
            ticket_id=f"T-{uuid.uuid4().hex[:12]}",
            channel="hotline-12345",
            received_at=utcnow(),
            title=title,
            content=content,
            citizen=Citizen(phone_masked="138****5678", citizen_hash=uuid.uuid4().hex),
            location=Location(address=grid.name_zh, grid_code=grid.code, area_code=grid.parent),
            category_code=category,
            external_id=f"ext-{n}",
        )
        out.append(
            as_delivered(
                encode(event), topic="inproc.intake.tickets", partition=n % 6, offset=n // 6
            )
        )
    return out


def as_delivered(record: Record, *, topic: str, partition: int, offset: int) -> ConsumerRecord:  # type: ignore[type-arg]
    """An encoded event as the consumer gets it from the broker."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=record.key,
        value=record.value,
        checksum=None,
        serialized_key_size=len(record.key),
        serialized_value_size=len(record.value),
        headers=tuple(record.headers),
    )


async def measure(args: argparse.Namespace, settings: DispatchSettings) -> None:
    app = create_app(settings)
    feed = records(args.count + args.batch)
    async with app.router.lifespan_context(app):
        consumer = app.state.runtime.consumer
        assert consumer is not None

        async def fetch(batch: list[ConsumerRecord]) -> None:  # type: ignore[type-arg]
            await consumer._apply_together(consumer._plan(batch))

        await fetch(feed[: args.batch])  # warm-up: caches, prepared statements
        if args.warm:  # the same kinds of tickets under other ids: the routing memo warm
            kinds = records(args.count + args.batch)
            for start in range(0, len(kinds), 500):
                await fetch(kinds[start : start + 500])
        rest = feed[args.batch :]
        backends = None
        if settings.database_application_name:
            # This process's PostgreSQL backends (the consumer's and the relay's connections),
            # read at the start and the end only: the pools keep their connections.
            backends = BackendSampler(
                args.postgres, {settings.database_application_name: "dispatch"}, interval=3600
            )
            await asyncio.to_thread(backends.start)
        statement_cpu.measuring = args.statements
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, len(rest), args.batch):
            await fetch(rest[start : start + args.batch])
        if args.broker:
            async with app.state.runtime.context.sessions() as session:
                pending = select(func.count()).select_from(outbox_table)
                pending = pending.where(is_pending(outbox_table))
                while (await session.execute(pending)).scalar_one():
                    await asyncio.sleep(0.01)
                    await session.rollback()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        statement_cpu.measuring = False
        if backends is not None:
            await asyncio.to_thread(backends.stop)
    n = len(rest)
    database = ""
    if backends is not None:
        used, seen, _, _ = backends.usage().get("dispatch", (0.0, 0, 0, 0))
        database = f", PostgreSQL {used / n * 1e3:.3f} ms CPU per ticket ({seen} backends)"
    print(
        f"dispatch consumer ({args.database}, fetches of {args.batch}"
        f"{', relay publishing' if args.broker else ''}{', memo warm' if args.warm else ''}): "
        f"{n / wall:,.0f} tickets/s "
        f"wall, {cpu / n * 1e3:.3f} ms CPU per ticket{database}"
    )
    if args.statements:
        statement_cpu.report(n, "ticket")


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    common = dict(
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_prefix="inproc",
        scheduler_interval_ms=3_600_000,
        auth_token_secret=secrets.token_hex(32),
    )
    if args.database == "postgres":
        schema = f"{args.schema_prefix}_dispatch_{uuid.uuid4().hex[:8]}"
        settings = DispatchSettings(
            database_url=args.postgres.replace("postgresql://", "postgresql+asyncpg://"),
            database_schema=schema,
            database_application_name=f"fq-{schema}",
            **common,  # type: ignore[arg-type]
        )
        await upgrade_async("dispatch", settings)
        try:
            await measure(args, settings)
        finally:
            await drop_schema(args.postgres, schema)
        return
    with tempfile.TemporaryDirectory() as tmp:
        settings = DispatchSettings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'dispatch.db'}",
            **common,  # type: ignore[arg-type]
        )
        await upgrade_async("dispatch", settings)
        await measure(args, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=12_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument(
        "--schema-prefix", default="inproc", help="the prefix of the scratch schema's name"
    )
    parser.add_argument("--broker", action="store_true", help="include the relay's publishing")
    parser.add_argument(
        "--warm", action="store_true", help="route tickets of the same kinds first (memo warm)"
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="PostgreSQL: the backends' CPU by statement over the measured run",
    )
    args = parser.parse_args()
    if args.statements:
        statement_cpu.install()
    run_in_process(lambda bootstrap: run(args, bootstrap), broker=args.broker)


if __name__ == "__main__":
    main()
