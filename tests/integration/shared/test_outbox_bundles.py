"""Outbox bundles: one row holding many events' records (a batch file's). The relay sends each
record in the bundle's place, as a row of its own would be sent; a claim, a replay and a
re-queue count events, not rows, so a batch holds about ``outbox_batch_size`` events whatever
the rows hold; intake's migration adds them and its downgrade splits every bundle kept back
into rows of one event."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import MetaData, Table, func, select, update

from fengqiao import registry
from shared import db
from shared.bus import BrokerWatch, create_topics
from shared.events import INTAKE_TOPIC
from shared.events.base import decode, encoded, header, utcnow
from shared.metrics import ServiceMetrics
from shared.migrate import alembic_config
from shared.outbox import (
    PENDING_TABLE,
    RECORDS,
    OutboxRelay,
    bundle_row,
    bus_tables,
    event_row,
    is_pending,
    row_headers,
)
from shared.settings import ServiceSettings
from tests.integration.shared.test_bus import read_topic, ticket
from tests.support import Database, bus_settings, wait_until


def _bundle(*numbers: int) -> dict[str, Any]:
    row = bundle_row(encoded([ticket(n) for n in numbers]), now=utcnow())
    assert row is not None
    return row


class _Sent:
    """The relay's ``_send`` replaced: what each call was given."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    async def __call__(self, rows: Any) -> None:
        self.calls.append(list(rows))


async def _relay(
    settings: ServiceSettings,
) -> tuple[Table, Any, OutboxRelay]:
    """Bus tables with bundles in a schema of their own, created, and a relay on them."""
    await db.ensure_schema(settings)
    metadata = MetaData()
    outbox, _, bus_state = bus_tables(metadata, bundles=True)
    engine = db.create_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    relay = OutboxRelay(
        engine=engine,
        outbox=outbox,
        bus_state=bus_state,
        settings=settings,
        metrics=ServiceMetrics("bundles"),
        watch=BrokerWatch(),
        client_id="bundles",
    )
    return outbox, engine, relay


async def test_a_bundle_s_records_reach_the_broker_in_its_place(
    broker: Any, database: Database, prefix: str
) -> None:
    """A single row, a bundle of five, a single row: the topic (one partition, so one order)
    holds seven records in that order, each the record a row of its own would have sent."""
    settings = ServiceSettings(
        **bus_settings(broker.bootstrap, prefix),
        **database.settings_for("bundled"),
        kafka_topic_partitions=1,
    )
    await create_topics(settings)
    outbox, engine, relay = await _relay(settings)
    task = asyncio.create_task(relay.run())
    try:
        async with engine.begin() as conn:
            await conn.execute(outbox.insert(), [event_row(ticket(1))])
            await conn.execute(outbox.insert(), [_bundle(2, 3, 4, 5, 6)])
            await conn.execute(outbox.insert(), [event_row(ticket(7))])
        relay.wake()
        records = await read_topic(settings, INTAKE_TOPIC, 7)
        assert [r.key for r in records] == [ticket(n).ticket_id.encode() for n in range(1, 8)]
        for n, record in enumerate(records, start=1):
            event = decode(record.value, record.headers, record.key)
            assert event.ticket_id == ticket(n).ticket_id and event.title == f"t{n}"
            assert header(record.headers, "ce_subject") == event.ticket_id
        produced = relay._metrics.events_produced.labels("intake.ticket.received")
        await wait_until(lambda: _is(relay.published == 7), what="seven events counted")
        assert produced._value.get() == 7
        await wait_until(
            lambda: _pending(engine, outbox, 0), what="every row claimed, the bundle's too"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await relay.close()
        await engine.dispose()


async def _is(value: bool) -> bool:
    return value


async def _pending(engine: Any, outbox: Table, count: int) -> bool:
    async with engine.connect() as conn:
        found = (
            await conn.execute(select(func.count()).select_from(outbox).where(is_pending(outbox)))
        ).scalar_one()
    return bool(found == count)


async def test_a_claim_takes_about_a_batch_of_events_a_bundle_larger_alone(
    database: Database,
) -> None:
    """Batches of 5 events: a row, a bundle of 3 and one of 4 (8 events: the last one taken
    had only 4 before it), then a row and a bundle of 10, then the last row. The pending rows
    hold each row's count, so the claim reads nothing else to know it."""
    settings = ServiceSettings(**database.settings_for("claims"), outbox_batch_size=5)
    outbox, engine, relay = await _relay(settings)
    sent = _Sent()
    relay._send = sent  # type: ignore[method-assign]
    try:
        rows = [
            event_row(ticket(1)),
            _bundle(2, 3, 4),
            _bundle(5, 6, 7, 8),
            event_row(ticket(9)),
            _bundle(*range(10, 20)),
            event_row(ticket(20)),
        ]
        async with engine.begin() as conn:
            for row in rows:
                await conn.execute(outbox.insert(), [row])
        pending = bus_tables(MetaData(), bundles=True)[0].metadata.tables[PENDING_TABLE]
        async with engine.connect() as conn:
            counts = (await conn.execute(select(pending.c[RECORDS]).order_by(pending.c.id))).all()
        assert [c[0] for c in counts] == [None, 3, 4, None, 10, None]

        assert [await relay.publish_batch() for _ in range(4)] == [8, 11, 1, 0]
        assert [len(call) for call in sent.calls] == [3, 2, 1]
        assert [[row[7] for row in call] for call in sent.calls] == [
            [None, 3, 4],
            [None, 10],
            [None],
        ]
        assert relay.published == 20
    finally:
        await relay.close()
        await engine.dispose()


async def test_a_replay_and_a_requeue_count_events(database: Database) -> None:
    """A new broker's replay sends published bundles a batch of events at a time; re-queueing
    a time's rows says how many events it queued."""
    settings = ServiceSettings(**database.settings_for("replays"), outbox_batch_size=5)
    outbox, engine, relay = await _relay(settings)
    sent = _Sent()
    relay._send = sent  # type: ignore[method-assign]
    try:
        async with engine.begin() as conn:
            for row in (_bundle(1, 2, 3, 4, 5, 6), event_row(ticket(7)), _bundle(8, 9)):
                await conn.execute(outbox.insert(), [row])
        while await relay.publish_batch():
            pass
        ids = [row[0] for call in sent.calls for row in call]
        sent.calls.clear()
        relay._replay = (0, max(ids))  # what adopting a new broker sets
        async with engine.begin() as conn:  # where a restarted relay would resume
            await relay._store_state(conn, "replay_after", "0")
            await relay._store_state(conn, "replay_until", str(max(ids)))
        assert [await relay.replay_batch() for _ in range(3)] == [6, 3, 0]
        assert [[row[0] for row in call] for call in sent.calls] == [ids[:1], ids[1:]]

        async with engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == ids[0])
                .values(created_at=utcnow() - timedelta(hours=2))
            )
        assert await relay.requeue_since(utcnow() - timedelta(hours=1)) == 3
        assert await relay.requeue_since(utcnow() - timedelta(hours=3)) == 6  # the rest
    finally:
        await relay.close()
        await engine.dispose()


async def _payload_storage(engine: Any, database: Database) -> str | None:
    """PostgreSQL: how the outbox's payloads are stored (``e``: out of line, uncompressed;
    ``x``: the default, compressed when large); None on SQLite."""
    if database.kind != "postgres":
        return None
    async with engine.connect() as conn:
        return str(
            (
                await conn.exec_driver_sql(
                    "SELECT attstorage::text FROM pg_attribute "
                    "WHERE attrelid = 'outbox'::regclass AND attname = 'payload'"
                )
            ).scalar_one()
        )


async def test_intake_s_migration_adds_bundles_and_its_downgrade_splits_them(
    database: Database,
) -> None:
    settings = ServiceSettings(**database.settings_for("intake_bundles"))
    await db.ensure_schema(settings)
    config = alembic_config(registry.SERVICES["intake"].migrations, settings)
    await asyncio.to_thread(command.upgrade, config, "head")
    engine = db.create_engine(settings)
    outbox = bus_tables(MetaData(), bundles=True)[0]
    pending = outbox.metadata.tables[PENDING_TABLE]
    try:
        first_three = encoded([ticket(n) for n in (1, 2, 3)])
        published, kept = bundle_row(first_three, now=utcnow()), _bundle(4, 5)
        async with engine.begin() as conn:
            await conn.execute(outbox.insert(), [published])
            await conn.execute(outbox.insert(), [event_row(ticket(6))])
            await conn.execute(outbox.insert(), [kept])
            first = (await conn.execute(select(func.min(pending.c.id)))).scalar_one()
            await conn.execute(pending.delete().where(pending.c.id == first))  # published
            counts = (await conn.execute(select(pending.c[RECORDS]).order_by(pending.c.id))).all()
        assert [c[0] for c in counts] == [None, 2]
        postgres = database.kind == "postgres"
        assert await _payload_storage(engine, database) == ("e" if postgres else None)

        await asyncio.to_thread(command.downgrade, config, "intake_outbox_pending")
        plain = bus_tables(MetaData())[0]
        plain_pending = plain.metadata.tables[PENDING_TABLE]
        async with engine.connect() as conn:
            rows = (await conn.execute(select(plain).order_by(plain.c.id))).all()
            waiting = set((await conn.execute(select(plain_pending.c.id))).scalars())
        assert RECORDS not in rows[0]._fields
        assert await _payload_storage(engine, database) == ("x" if postgres else None)
        by_key = {row.key: row for row in rows}
        assert sorted(by_key) == [ticket(n).ticket_id for n in range(1, 7)]
        assert {row.key for row in rows if row.id in waiting} == {
            ticket(n).ticket_id for n in (4, 5, 6)
        }
        for event in first_three:  # each event's own record, under its own id
            row = by_key[event.record.key.decode()]
            assert (row.payload, row.event_id) == (event.record.value, str(event.event_id))
            assert row_headers(row.headers, row.header_block) == event.record.headers
        assert len({row.event_id for row in rows}) == 6
        # the trigger as before: a new row is pending
        async with engine.begin() as conn:
            await conn.execute(plain.insert(), [event_row(ticket(7))])
        async with engine.connect() as conn:
            assert len(set((await conn.execute(select(plain_pending.c.id))).scalars())) == 4

        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.begin() as conn:
            await conn.execute(outbox.insert(), [_bundle(8, 9)])
            counts = (await conn.execute(select(pending.c[RECORDS]).order_by(pending.c.id))).all()
        assert [c[0] for c in counts] == [None, None, None, None, 2]
    finally:
        await engine.dispose()
