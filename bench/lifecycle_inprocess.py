"""Intake's lifecycle consumer alone, in one process: dispatch's events applied to the tickets
they are about, a fetch at a time, and nothing else running.

    python -m bench.lifecycle_inprocess [--tickets 12000] [--fetch 90] [--database postgres|sqlite]
                                        [--schema-prefix P] [--consumer]

A scratch intake database (a PostgreSQL schema named ``<P>_…``, ``lifecyclebench_…`` by default,
dropped at the end, or a SQLite file) gets ``--tickets`` tickets; then each gets a
``TicketAssigned`` (a department, a resolution deadline, a handling line in its note, as dispatch
sends them in the whole suite) and then a ``DispatchSigned``, applied in fetches of ``--fetch``
events the way the consumer applies a fetch (``tracking.apply_lifecycles`` in a session's
transaction). Prints this process's CPU milliseconds an event and, on PostgreSQL, its backend's;
the events' decoding and the consumer's own bookkeeping are not in it. With ``--consumer`` they
are: each fetch is the events' Kafka records (as the relay sends them), handed to intake's
``InboxConsumer`` with its own handlers the way it applies a fetch it polled (decoding, the plan,
the transaction, the handler, the counts); the broker's fetch and the offset commit are not.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.relay_inprocess import scratch_settings, start_sampling, stop_sampling
from services.intake import tracking
from services.intake.handlers import event_handlers
from services.intake.models import TICKETS, inbox_table, metadata, outbox_table
from shared import bulk
from shared.bus import BrokerWatch
from shared.db import create_engine, ensure_schema
from shared.events import dispatch as d
from shared.events.base import Event, encode
from shared.inbox import InboxConsumer
from shared.metrics import ServiceMetrics
from shared.settings import ServiceSettings

DEPARTMENTS = [f"3306{n:02d}-{kind}" for n in range(2, 8) for kind in ("cg", "sw", "zj", "jt")]


def ticket_rows(count: int) -> list[dict[str, Any]]:
    """Stored tickets, every column the table requires given."""
    now = datetime.now(UTC)
    fixed = {
        "channel": "hotline-12345-phone",
        "received_at": now,
        "title": "路灯不亮",
        "content": "小区门口的路灯坏了好几天",
        "category_code": "0102",
        "urgency": "normal",
        "is_enterprise": False,
        "repeat_count": 0,
        "time_limit_profile": "standard",
        "status": "received",
        "attachments": [],
        "extra": {},
    }
    return [{"ticket_id": ticket_id(n), **fixed} for n in range(count)]


def ticket_id(n: int) -> str:
    return f"20261206-{n:07d}"


@dataclass(frozen=True, slots=True)
class Polled:
    """What the consumer reads of a polled record."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def polled(events: list[Event]) -> list[Polled]:
    """The events as the consumer polls them: the relay's records, on two partitions."""
    out = []
    for n, event in enumerate(events):
        record = encode(event)
        out.append(Polled("dispatch", n % 2, n, record.key, record.value, record.headers))
    return out


def lifecycle_events(count: int) -> list[Event]:
    """Each ticket's assignment, then its signature: the fetches see the first new dispatches,
    then stored ones moved."""
    start = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    assigned: list[Event] = []
    signed: list[Event] = []
    for n in range(count):
        department = DEPARTMENTS[n % len(DEPARTMENTS)]
        dispatch_id = f"D-{ticket_id(n)}-1"
        assigned.append(
            d.TicketAssigned(
                ticket_id=ticket_id(n),
                dispatch_id=dispatch_id,
                department_code=department,
                department_tier="district",
                category_code="0102",
                channel="hotline-12345-phone",
                deadlines={"resolution": start + timedelta(days=3)},
                handling_line="normal",
                time_limit_profile="standard",
                occurred_at=start + timedelta(seconds=n),
            )
        )
        signed.append(
            d.DispatchSigned(
                ticket_id=ticket_id(n),
                dispatch_id=dispatch_id,
                department_code=department,
                occurred_at=start + timedelta(hours=1, seconds=n),
            )
        )
    return assigned + signed


async def measure(args: argparse.Namespace, settings: ServiceSettings) -> None:
    await ensure_schema(settings)
    engine = create_engine(settings)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        rows = ticket_rows(args.tickets)
        for chunk in bulk.chunks(rows, 1000):
            async with engine.begin() as conn:
                await bulk.insert(conn, TICKETS, chunk)
        events = lifecycle_events(args.tickets)
        warm, events = events[: args.fetch], events[args.fetch :]
        async with sessions() as session, session.begin():
            await tracking.apply_lifecycles(session=session, events=warm)
        if args.consumer:
            # As intake's runtime wires it; the broker is never asked (no fetch, no commit).
            tables = {"inbox": inbox_table, "outbox": outbox_table}
            consumer = InboxConsumer(
                name="intake",
                topics=("dispatch",),
                handlers=event_handlers(None),  # type: ignore[arg-type]  # it reads no context
                engine=engine,
                sessions=sessions,
                settings=settings,
                metrics=ServiceMetrics("lifecyclebench"),
                watch=BrokerWatch(),
                **tables,
            )
            records = polled(events)
        backends = await start_sampling(settings)
        cpu = time.process_time()
        applied = 0
        for start in range(0, len(events), args.fetch):
            if args.consumer:
                before = consumer.applied
                await consumer._apply_together(consumer._plan(records[start : start + args.fetch]))
                applied += consumer.applied - before
                continue
            async with sessions() as session, session.begin():
                done = await tracking.apply_lifecycles(
                    session=session, events=events[start : start + args.fetch]
                )
            applied += len(done)
        cpu = time.process_time() - cpu
        database = await stop_sampling(backends)
    finally:
        await engine.dispose()
    assert applied == len(events), (applied, len(events))
    shares = f"process {cpu / applied * 1e3:.4f}"
    if database is not None:
        shares += f", PostgreSQL {database / applied * 1e3:.4f}"
    print(
        f"lifecycle{' consumer' if args.consumer else ''} ({args.database}, fetches of "
        f"{args.fetch}, {applied} events): "
        f"ms an event: {shares}"
    )


async def run(args: argparse.Namespace) -> None:
    async with scratch_settings(args.database, args.schema_prefix) as settings:
        await measure(args, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=12_000, help="tickets (two events each)")
    parser.add_argument("--fetch", type=int, default=90, help="events a fetch")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--schema-prefix", default="lifecyclebench")
    parser.add_argument(
        "--consumer", action="store_true", help="records through intake's InboxConsumer"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
