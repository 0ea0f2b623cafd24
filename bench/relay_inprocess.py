"""The outbox's CPU per event in one process: outbox rows written, then published to an embedded
broker, and nothing else running.

    python -m bench.relay_inprocess [--count 20000] [--batch 500] [--write-batch 50]
                                    [--database postgres|sqlite] [--schema-prefix P]
                                    [--profile FILE]

A scratch outbox (a PostgreSQL schema named ``<P>_…``, ``relaybench_…`` by default, dropped at the
end, or a SQLite file) gets one warm-up batch written and published, then ``--count`` rows of
intake's ``TicketReceived`` (~1 KB texts, distinct ticket ids of intake's form) written in
transactions of ``--write-batch`` rows (one ``bulk.insert`` each, as the services' writers do:
the write's own cost, with whatever the outbox makes the database do with each row), then the
service's own ``OutboxRelay`` is driven batch by batch (``publish_batch`` until nothing is
pending: claim, send, mark, commit). Prints, for the write and for the relay, this process's CPU
milliseconds per event and on PostgreSQL the CPU of the backends that served it; for the relay
also events per second of wall time and the part of its CPU spent from the relay handing a batch
to the producer until every record is acknowledged
(``_send``, aiokafka's sender task included: nothing else runs), and on PostgreSQL the CPU of the
backends that served the relay. With ``--profile`` the measured loop is written as a cProfile file
timed by CPU, not wall-clock, time (a socket write's wait for the process it wakes is not the
relay's work).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import random
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData

from bench.intake import POSTGRES_URL, drop_schema
from bench.intake_inprocess import TEXT, run_in_process
from bench.suite import BackendSampler
from shared import bulk
from shared.bus import BrokerWatch
from shared.db import create_engine, ensure_schema
from shared.events.base import utcnow
from shared.events.intake import Citizen, Location, TicketReceived
from shared.metrics import ServiceMetrics
from shared.outbox import OutboxRelay, bus_tables, event_row
from shared.settings import ServiceSettings


def events(count: int, *, seed: int = 13) -> list[TicketReceived]:
    """Received tickets as intake writes them, with ids of intake's form (``YYYYMMDD-nnnnnnn``)."""
    rnd = random.Random(seed)
    return [
        TicketReceived(
            ticket_id=f"20261206-{n:07d}",
            channel="hotline-12345-phone",
            received_at=utcnow(),
            title="路灯不亮",
            content=TEXT[: rnd.randint(200, len(TEXT))],
            citizen=Citizen(phone_masked="138****5678", citizen_hash=uuid.uuid4().hex),
            location=Location(address="枫桥市越城区北海街道塔山社区"),
            category_code="0102",
            external_id=f"relay-{n}",
        )
        for n in range(count)
    ]


class TimedSend:
    """Wraps the relay's ``_send``: the process CPU from the hand-over to the last ack."""

    def __init__(self, relay: OutboxRelay) -> None:
        self.inner = relay._send
        self.cpu = 0.0
        self.wall = 0.0

    async def __call__(self, rows: Sequence[Any]) -> None:
        start, began = time.process_time(), time.perf_counter()
        try:
            await self.inner(rows)
        finally:
            self.cpu += time.process_time() - start
            self.wall += time.perf_counter() - began


async def measure(args: argparse.Namespace, settings: ServiceSettings) -> None:
    metadata = MetaData()
    outbox, _, bus_state = bus_tables(metadata)
    await ensure_schema(settings)
    engine = create_engine(settings)
    relay = OutboxRelay(
        engine=engine,
        outbox=outbox,
        bus_state=bus_state,
        settings=settings,
        metrics=ServiceMetrics("relaybench"),
        watch=BrokerWatch(),
        client_id="relaybench",
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        rows = [event_row(e) for e in events(args.count + args.batch)]
        async with engine.begin() as conn:  # warm-up: metadata, connections
            await bulk.insert(conn, outbox, rows[: args.batch])
        await relay.check_broker()
        assert await relay.publish_batch() == args.batch
        writes = await start_sampling(settings)
        cpu = time.process_time()
        for start in range(args.batch, len(rows), args.write_batch):
            async with engine.begin() as conn:
                await bulk.insert(conn, outbox, rows[start : start + args.write_batch])
        write_cpu = time.process_time() - cpu
        write_db = await stop_sampling(writes)
        timed = TimedSend(relay)
        relay._send = timed  # type: ignore[method-assign]
        backends = await start_sampling(settings)
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        published = 0
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        while sent := await relay.publish_batch():
            published += sent
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        relay_db = await stop_sampling(backends)
        if profiler:
            profiler.dump_stats(args.profile)
    finally:
        await relay.close()
        await engine.dispose()
    assert published == args.count, (published, args.count)
    written = {"CPU": write_cpu}
    per_event = {"CPU": cpu, "send": timed.cpu, "send's wall": timed.wall}
    if write_db is not None and relay_db is not None:
        written["PostgreSQL"] = write_db
        per_event["PostgreSQL"] = relay_db
        total = write_cpu + write_db + cpu + relay_db
    else:
        total = write_cpu + cpu
    print(
        f"write ({args.database}, transactions of {args.write_batch}): ms an event: "
        + ", ".join(f"{name} {used / published * 1e3:.4f}" for name, used in written.items())
    )
    shares = ", ".join(f"{name} {used / published * 1e3:.4f}" for name, used in per_event.items())
    print(
        f"relay ({args.database}, batches of {args.batch}): {published / wall:,.0f} events/s "
        f"wall; ms an event: {shares}"
    )
    counted = "process and PostgreSQL" if write_db is not None else "process"
    print(f"write + relay, {counted}: {total / published * 1e3:.4f} ms an event")


async def start_sampling(settings: ServiceSettings) -> BackendSampler | None:
    """PostgreSQL: sample the CPU of the backends of this process's connections from now."""
    if not settings.database_application_name:
        return None
    sampler = BackendSampler(
        POSTGRES_URL, {settings.database_application_name: "bench"}, interval=3600
    )
    await asyncio.to_thread(sampler.start)
    return sampler


async def stop_sampling(sampler: BackendSampler | None) -> float | None:
    """The backends' CPU seconds since ``start_sampling``."""
    if sampler is None:
        return None
    await asyncio.to_thread(sampler.stop)
    return float(sampler.usage().get("bench", (0.0,))[0])


@contextlib.asynccontextmanager
async def scratch_settings(database: str, prefix: str, **extra: Any) -> AsyncIterator[Any]:
    """Settings of a scratch database: a PostgreSQL schema ``<prefix>_…`` (its connections named
    after it, for ``start_sampling``), dropped at the end, or a SQLite file in a temporary
    folder."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}" if database == "postgres" else None
    with tempfile.TemporaryDirectory() as tmp:
        settings = ServiceSettings(
            database_url=(
                POSTGRES_URL.replace("postgresql://", "postgresql+asyncpg://")
                if schema
                else f"sqlite+aiosqlite:///{Path(tmp) / 'scratch.db'}"
            ),
            database_schema=schema,
            database_application_name=f"fq-{schema}" if schema else None,
            log_json=False,
            auth_token_secret=secrets.token_hex(32),
            **extra,
        )
        try:
            yield settings
        finally:
            if schema:
                await drop_schema(POSTGRES_URL, schema)


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    async with scratch_settings(
        args.database,
        args.schema_prefix,
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_prefix="inproc",
        outbox_batch_size=args.batch,
    ) as settings:
        await measure(args, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="events measured")
    parser.add_argument("--batch", type=int, default=500, help="the relay's batch size")
    parser.add_argument(
        "--write-batch", type=int, default=50, help="outbox rows written a transaction"
    )
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--schema-prefix", default="relaybench", help="the prefix of the scratch schema's name"
    )
    parser.add_argument("--profile", type=Path, help="write a cProfile (CPU time) of the loop")
    args = parser.parse_args()
    run_in_process(lambda bootstrap: run(args, bootstrap), broker=True)


if __name__ == "__main__":
    main()
