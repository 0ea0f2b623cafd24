"""Outbox relay and inbox consumer against the real broker and real databases."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import MessageSizeTooLargeError, RequestTimedOutError
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import SessionTransaction

from shared import bulk
from shared.broker import EmbeddedBroker
from shared.bus import (
    MAX_REQUEST_SIZE,
    BrokerWatch,
    consumer_group_id,
    create_topics,
    make_admin,
    make_producer,
    partition_batches,
    send_batches,
    topic_name,
)
from shared.db import create_engine, ensure_schema, session_factory
from shared.events import DEAD_LETTER_TOPIC, INTAKE_TOPIC, encode
from shared.events.base import Record, header, utcnow
from shared.events.intake import TicketReceived
from shared.inbox import Batch, InboxConsumer, Only
from shared.lease import HostLease
from shared.metrics import ServiceMetrics
from shared.outbox import (
    PENDING_TABLE,
    PUBLISHED_TABLE,
    Outbox,
    OutboxRelay,
    bus_tables,
    is_pending,
    json_headers,
    record_row,
)
from shared.rotation import Handover, leave_handover
from shared.settings import ServiceSettings
from tests.support import Database, bus_settings, wait_until


def ticket(n: int) -> TicketReceived:
    return TicketReceived(
        ticket_id=f"20260101-{n:07d}",
        channel="hotline-12345-phone",
        received_at=utcnow(),
        title=f"t{n}",
        content="路灯不亮",
        category_code="0102",
    )


class Harness:
    """One fake service: its own tables, a relay and, on demand, a consumer."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metadata = MetaData()
        self.outbox_table, self.inbox_table, self.bus_state = bus_tables(self.metadata)
        self.applied = Table(
            "applied",
            self.metadata,
            Column("event_id", String(64), primary_key=True),
            Column("ticket_id", String(32)),
        )
        self.metrics = ServiceMetrics("harness")
        self.watch = BrokerWatch()
        self.outbox = Outbox(self.outbox_table)
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self, *, relay_task: bool = True) -> None:
        """Create the tables and the relay; run it in a task unless the test drives it."""
        await ensure_schema(self.settings)
        self.engine = create_engine(self.settings)
        self.sessions = session_factory(self.engine)
        async with self.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)
        self.relay = OutboxRelay(
            engine=self.engine,
            outbox=self.outbox_table,
            bus_state=self.bus_state,
            settings=self.settings,
            metrics=self.metrics,
            watch=self.watch,
            client_id="harness",
        )
        if not relay_task:
            return
        self.tasks.append(asyncio.create_task(self.relay.run()))
        await wait_until(
            lambda: _true(self.watch.cluster_id is not None), what="relay to reach broker"
        )

    def consume(self, handler) -> InboxConsumer:
        consumer = InboxConsumer(
            name="harness",
            topics=(INTAKE_TOPIC,),
            handlers={TicketReceived: handler},
            engine=self.engine,
            sessions=self.sessions,
            inbox=self.inbox_table,
            outbox=self.outbox_table,
            settings=self.settings,
            metrics=self.metrics,
            watch=self.watch,
            on_commit=self.relay.wake,
        )
        self.tasks.append(asyncio.create_task(consumer.run()))
        return consumer

    async def record(self, event: TicketReceived, *, session: Any) -> None:
        """The handler most tests use: note that the event was applied."""
        await session.execute(
            self.applied.insert().values(event_id=str(event.event_id), ticket_id=event.ticket_id)
        )

    async def emit(self, *events: TicketReceived) -> None:
        async with self.sessions() as session, session.begin():
            await self.outbox.add(session, *events)
        self.relay.wake()

    async def deliver(self, *events: TicketReceived) -> None:
        """Publish straight to the topic, past the outbox (which holds an event id once)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for event in events:
                record = encode(event)
                await producer.send_and_wait(
                    topic_name(self.settings, INTAKE_TOPIC),
                    record.value,
                    key=record.key,
                    headers=record.headers,
                )
        finally:
            await producer.stop()

    async def count(self, table: Table, *where: Any) -> int:
        async with self.engine.connect() as conn:
            query = select(func.count()).select_from(table)
            for clause in where:
                query = query.where(clause)
            return int((await conn.execute(query)).scalar_one())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.relay.close()
        await self.engine.dispose()


async def _true(value: bool) -> bool:
    return value


async def _duplicates_counted(harness: Harness, count: int, *, what: str) -> None:
    """Wait until the consumer has counted ``count`` received tickets as duplicates."""
    duplicates = harness.metrics.events_duplicate.labels("intake.ticket.received")
    await wait_until(lambda: _true(duplicates._value.get() == count), what=what)


@pytest.fixture
async def harness(broker, database: Database, prefix: str):
    settings = ServiceSettings(
        **bus_settings(broker.bootstrap, prefix),
        **database.settings_for("harness"),
        consumer_max_tries=3,
        broker_handover_wait_ms=300,  # no test here rotates with a handover but those that say
    )
    await create_topics(settings)
    h = Harness(settings)
    await h.start()
    yield h
    await h.stop()


async def _from_the_start(settings: ServiceSettings, logical: str) -> AIOKafkaConsumer:
    """A started consumer of no group, reading a topic from its first record."""
    consumer = AIOKafkaConsumer(
        topic_name(settings, logical),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    return consumer


async def read_topic(
    settings: ServiceSettings, logical: str, count: int, timeout: float = 10
) -> list[Any]:
    consumer = await _from_the_start(settings, logical)
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def _event_ids_on(
    settings: ServiceSettings, logical: str, wanted: set[str], timeout: float = 10
) -> set[str]:
    """Which of ``wanted`` the topic holds: read until all are seen or ``timeout`` passed."""
    consumer = await _from_the_start(settings, logical)
    seen: set[str] = set()
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not wanted <= seen:
                    for batch in (await consumer.getmany(timeout_ms=200)).values():
                        seen.update(header(r.headers, "ce_id") or "" for r in batch)
    finally:
        await consumer.stop()
    return seen & wanted


async def test_relay_publishes_cloudevents_keyed_by_ticket_and_marks_rows(harness: Harness) -> None:
    await harness.emit(ticket(1), ticket(2), ticket(3))
    records = await read_topic(harness.settings, INTAKE_TOPIC, 3)
    assert sorted(r.key for r in records) == [
        b"20260101-0000001",
        b"20260101-0000002",
        b"20260101-0000003",
    ]
    for record in records:
        assert header(record.headers, "ce_specversion") == "1.0"
        assert header(record.headers, "ce_type") == "cn.fengqiao.intake.ticket.received.v1"
        assert header(record.headers, "ce_subject") == record.key.decode()
    await wait_until(
        lambda: _count_is(harness, harness.outbox_table, 0, is_pending(harness.outbox_table)),
        what="rows marked published",
    )
    assert harness.metrics.events_produced.labels("intake.ticket.received")._value.get() == 3


async def _count_is(h: Harness, table: Table, expected: int, *where: Any) -> bool:
    return await h.count(table, *where) == expected


async def driven_harness(broker: EmbeddedBroker, database: Database, prefix: str) -> Harness:
    """A harness whose relay the test drives step by step, the broker already adopted."""
    settings = ServiceSettings(
        **bus_settings(broker.bootstrap, prefix),
        **database.settings_for("harness"),
        broker_handover_wait_ms=300,
    )
    await create_topics(settings)
    h = Harness(settings)
    await h.start(relay_task=False)
    try:
        await h.relay.check_broker()
    except BaseException:
        await h.stop()
        raise
    return h


async def test_a_batch_is_marked_only_once_the_broker_has_it_and_in_one_statement(
    broker, database: Database, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL claims and marks a batch in one statement on the driver, committed after the
    send: a send that fails leaves every row pending; a send that succeeds publishes them in id
    order."""
    h = await driven_harness(broker, database, prefix)
    try:
        await h.emit(*(ticket(n) for n in range(1, 6)))
        pending = is_pending(h.outbox_table)
        send = h.relay._send

        async def refused(rows: Any) -> None:
            raise ConnectionError("the broker went away mid-batch")

        h.relay._send = refused  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await h.relay.publish_batch()
        assert await h.count(h.outbox_table, pending) == 5

        sent: list[int] = []
        statements: list[str] = []

        async def recorded(rows: Any) -> None:
            sent.extend(r[0] for r in rows)
            await send(rows)

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not statement.startswith("BEGIN"):  # SQLite's own, on the connection
                statements.append(statement)

        fetch, driven = asyncpg.Connection.fetch, cast(list[str], [])

        async def fetched(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            driven.append(query)  # the relay's own statements on the driver
            return await fetch(conn, query, *args, **kwargs)

        h.relay._send = recorded  # type: ignore[method-assign]
        monkeypatch.setattr(asyncpg.Connection, "fetch", fetched)
        sa_event.listen(h.engine.sync_engine, "before_cursor_execute", seen)
        try:
            assert await h.relay.publish_batch() == 5
        finally:
            sa_event.remove(h.engine.sync_engine, "before_cursor_execute", seen)
            monkeypatch.undo()
        assert sent == sorted(sent) and len(sent) == 5
        assert await h.count(h.outbox_table, pending) == 0
        # The claim and the mark: one statement on PostgreSQL; a read, the pending rows'
        # deletion and the minute's record on SQLite. On PostgreSQL straight on the driver: no
        # SQLAlchemy execution at all.
        if database.kind == "postgres":
            assert statements == [] and len(driven) == 1 and driven[0].startswith("WITH")
        else:
            assert len(statements) == 3 and driven == []
        assert await h.relay.publish_batch() == 0
    finally:
        await h.stop()


async def test_rows_of_either_header_form_are_published_with_their_headers_byte_for_byte(
    broker, database: Database, prefix: str
) -> None:
    """A row written before ``header_block`` (JSON headers), an event's row (the values-only
    block) and a dead letter's (other headers, bytes that are not UTF-8) all go out with the
    headers they were written with."""
    h = await driven_harness(broker, database, prefix)
    try:
        old, new, odd = (encode(ticket(n)) for n in range(1, 4))
        odd = Record(odd.key, odd.value, [*odd.headers, ("x-dlq-origin", b"\xff\xfe\x80;")])
        rows = [
            record_row(r, event_id=str(n), event_type="intake.ticket.received", topic=INTAKE_TOPIC)
            for n, r in enumerate((old, new, odd))
        ]
        rows[0] |= {"headers": json_headers(old.headers), "header_block": None}
        assert rows[1]["header_block"] is not None and rows[2]["header_block"] is not None
        async with h.engine.begin() as conn:
            await bulk.insert(conn, h.outbox_table, rows)
        assert await h.relay.publish_batch() == 3
        published = {r.key: list(r.headers) for r in await read_topic(h.settings, INTAKE_TOPIC, 3)}
        assert published == {r.key: list(r.headers) for r in (old, new, odd)}
    finally:
        await h.stop()


def _before_fetch(
    monkeypatch: pytest.MonkeyPatch, see: Callable[[Any, str, tuple[Any, ...]], Awaitable[None]]
) -> None:
    """Have ``see(connection, query, args)`` awaited before every asyncpg ``fetch`` runs."""
    fetch = asyncpg.Connection.fetch

    async def seen(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        await see(conn, query, args)
        return await fetch(conn, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetch", seen)


async def test_the_relay_keeps_its_own_connection_and_replaces_one_the_server_closed(
    broker, database: Database, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: one connection serves every claim and probe (no pool checkout a batch); when
    the server ends it, the next batch or the one after claims on a new one, and nothing is
    lost."""
    if database.kind != "postgres":
        pytest.skip("the relay claims on a connection of its own on PostgreSQL only")
    h = await driven_harness(broker, database, prefix)
    pids: list[int] = []

    async def fetched(conn: Any, query: str, args: tuple[Any, ...]) -> None:
        pids.append(conn.get_server_pid())

    checkouts: list[Any] = []

    def checkout(*args: Any) -> None:
        checkouts.append(args)

    _before_fetch(monkeypatch, fetched)
    try:
        for n in range(1, 4):
            await h.emit(ticket(n))
            if n > 1:  # the first batch checks the connection out
                sa_event.listen(h.engine.sync_engine, "checkout", checkout)
            assert await h.relay.publish_batch() == 1
            assert not await h.relay.may_have_work()  # the probe, on the same connection
            if n > 1:
                sa_event.remove(h.engine.sync_engine, "checkout", checkout)
        assert len(pids) == 3 and len(set(pids)) == 1 and checkouts == []
        async with h.engine.connect() as conn:
            await conn.execute(text(f"SELECT pg_terminate_backend({pids[0]})"))
        await h.emit(ticket(4), ticket(5))
        sent, failures = 0, 0
        while not sent and failures < 2:
            try:
                sent = await h.relay.publish_batch()
            except Exception:  # whatever the driver raises for it, as the relay's loop takes it
                failures += 1
        assert sent == 2 and pids[-1] != pids[0]
        keys = sorted(r.key for r in await read_topic(h.settings, INTAKE_TOPIC, 5))
        assert keys == [ticket(n).ticket_id.encode() for n in range(1, 6)]
    finally:
        monkeypatch.undo()
        await h.stop()


async def test_the_claim_reads_the_pending_index_in_its_order_whatever_the_backlog(
    broker, database: Database, prefix: str
) -> None:
    """PostgreSQL: with published rows retained and a backlog, the claim takes the first rows of
    the pending index — no sort of every pending row, no walk of the primary key past the
    published ones."""
    if database.kind != "postgres":
        pytest.skip("the claim is PostgreSQL's")
    h = await driven_harness(broker, database, prefix)
    try:
        rows = [
            record_row(r, event_id=str(n), event_type="intake.ticket.received", topic=INTAKE_TOPIC)
            for n, r in enumerate(encode(ticket(n)) for n in range(6000))
        ]
        async with h.engine.begin() as conn:
            await bulk.insert(conn, h.outbox_table, rows)
            t = h.outbox_table
            pending = t.metadata.tables[PENDING_TABLE]
            await conn.execute(pending.delete().where(pending.c.id <= 3000))
            await conn.execute(text(f'ANALYZE "{t.name}"'))
            await conn.execute(text(f'ANALYZE "{PENDING_TABLE}"'))
            raw = (await conn.get_raw_connection()).driver_connection
            plan = "\n".join(
                r[0] for r in await raw.fetch("EXPLAIN " + h.relay._driver_claim, utcnow(), "r")
            )
        assert "Index Scan using outbox_pending_pkey" in plan and "Sort" not in plan, plan
        assert plan.count("Index Cond: (id = ANY") == 2, plan  # the claimed rows read by key
        assert "Seq Scan" not in plan, plan
    finally:
        await h.stop()


async def test_the_claim_reads_the_pending_index_on_a_table_not_yet_analysed(
    broker, database: Database, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: on a fresh outbox with a backlog and no statistics the planner expects few
    pending rows; the claim still takes the pending index's first entries in its order instead
    of reading every pending row and sorting them (the plan is read inside the relay's own
    claim transaction)."""
    if database.kind != "postgres":
        pytest.skip("the claim is PostgreSQL's")
    h = await driven_harness(broker, database, prefix)
    plans: list[str] = []

    async def explained(conn: Any, query: str, args: tuple[Any, ...]) -> None:
        if query == h.relay._driver_claim:
            plans.append("\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query, *args)))

    try:
        t = h.outbox_table
        rows = [
            record_row(r, event_id=str(n), event_type="intake.ticket.received", topic=INTAKE_TOPIC)
            for n, r in enumerate(encode(ticket(n)) for n in range(6000))
        ]
        async with h.engine.begin() as conn:
            # no automatic ANALYZE while the test runs: the table stays without statistics
            await conn.execute(text(f'ALTER TABLE "{t.name}" SET (autovacuum_enabled = false)'))
            await bulk.insert(conn, t, rows)
        _before_fetch(monkeypatch, explained)
        assert await h.relay.publish_batch() == h.settings.outbox_batch_size
        monkeypatch.undo()
        assert len(plans) == 1
        # the first ids in the key's order; then the ids claimed, and their rows, by key
        assert "Index Scan using outbox_pending_pkey" in plans[0], plans[0]
        assert "Sort" not in plans[0] and "Seq Scan" not in plans[0], plans[0]
        assert plans[0].count("Index Cond: (id = ANY") == 2, plans[0]
    finally:
        monkeypatch.undo()
        await h.stop()


async def test_the_backlog_gauge_counts_pending_rows_from_two_index_entries(
    broker, database: Database, prefix: str
) -> None:
    """The backlog gauge is the number of pending rows, read from the first and last entries
    of the pending index rather than by visiting every pending row."""
    h = await driven_harness(broker, database, prefix)
    try:
        backlog = h.metrics.outbox_backlog
        await h.relay.check_broker()
        assert backlog._value.get() == 0
        await h.emit(*(ticket(n) for n in range(1, 2001)))
        await h.relay.check_broker()
        assert backlog._value.get() == 2000
        assert await h.relay.publish_batch() == h.settings.outbox_batch_size
        await h.relay.check_broker()
        assert backlog._value.get() == 1500
        if database.kind == "postgres":
            async with h.engine.connect() as conn:
                statement = h.relay._backlog_span.compile(
                    h.engine, compile_kwargs={"literal_binds": True}
                )
                plan = (
                    await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}"))
                ).scalar_one()
            read = _rows_read(plan[0]["Plan"])
            assert read <= 2, plan
    finally:
        await h.stop()


def _rows_read(node: dict[str, Any]) -> int:
    """The rows every scan of a plan (``EXPLAIN (ANALYZE, FORMAT JSON)``) returned."""
    own = node["Actual Rows"] * node["Actual Loops"] if "Scan" in node["Node Type"] else 0
    return own + sum(_rows_read(child) for child in node.get("Plans", []))


async def test_a_batch_goes_out_one_batch_a_partition_and_one_failed_partition_keeps_all_pending(
    broker, database: Database, prefix: str
) -> None:
    """The claimed rows go out as one aiokafka batch per partition (no ``send()`` a record), each
    key on the partition aiokafka's partitioner gives it and each partition's records in id
    order. When one partition's batch fails, every row of the claim stays pending, those the
    broker did acknowledge on the other partitions included; the next batch publishes them all."""
    h = await driven_harness(broker, database, prefix)
    settings = h.settings
    try:
        events = [ticket(n) for n in range(1, 41)]
        await h.emit(*events)
        pending = is_pending(h.outbox_table)
        producer = h.relay._producer
        assert producer is not None
        topic = topic_name(settings, INTAKE_TOPIC)
        every = list(await producer.partitions_for(topic))
        keys = [e.ticket_id.encode() for e in events]
        expected = {k: DefaultPartitioner()(k, every, every) for k in keys}
        failing = expected[keys[0]]
        # The batch spans every partition of the topic, and one fails.
        assert len(set(expected.values())) == settings.kafka_topic_partitions > 1
        send_batch, calls = producer.send_batch, []

        async def one_partition_refused(batch: Any, topic: str, *, partition: int) -> Any:
            calls.append((partition, batch.record_count()))
            if partition != failing:
                return await send_batch(batch, topic, partition=partition)
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(RequestTimedOutError("partition's leader did not answer"))
            return refused

        async def no_single_sends(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a record sent alone")

        producer.send_batch = one_partition_refused  # type: ignore[method-assign]
        producer.send = no_single_sends  # type: ignore[method-assign]
        with pytest.raises(RequestTimedOutError):
            await h.relay.publish_batch()
        assert await h.count(h.outbox_table, pending) == 40
        assert sorted(p for p, _ in calls) == sorted(set(expected.values()))
        assert sum(n for _, n in calls) == 40
        assert h.relay.published == 0
        assert h.metrics.events_produced.labels("intake.ticket.received")._value.get() == 0
        acknowledged = sum(1 for k in keys if expected[k] != failing)
        first = await read_topic(settings, INTAKE_TOPIC, acknowledged)
        assert all(r.partition != failing for r in first)

        producer.send_batch = send_batch  # type: ignore[method-assign]
        assert await h.relay.publish_batch() == 40
        assert await h.count(h.outbox_table, pending) == 0
        assert h.metrics.events_produced.labels("intake.ticket.received")._value.get() == 40
        records = await read_topic(settings, INTAKE_TOPIC, acknowledged + 40)
        assert len(records) == acknowledged + 40
        by_partition: dict[int, list[bytes]] = {}
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            assert record.partition == expected[record.key]
            by_partition.setdefault(record.partition, []).append(record.key)
        for partition, on_it in by_partition.items():
            mine = [k for k in keys if expected[k] == partition]  # id order
            assert on_it[-len(mine) :] == mine
    finally:
        await h.stop()


async def test_partition_batches_overflow_in_order_and_refuse_an_oversized_record(
    broker, prefix: str
) -> None:
    """Records over one batch's size go out in several batches of their partition, in order,
    every partition's first batch queued before any second; a record over the request size is
    refused before anything of the set is sent."""
    settings = ServiceSettings(**bus_settings(broker.bootstrap, prefix))
    await create_topics(settings)
    topic = topic_name(settings, INTAKE_TOPIC)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_batch_size=2048)
    await producer.start()
    try:
        every = list(await producer.partitions_for(topic))
        keys = [b"one-key"]
        keys += [
            k for k in (b"key-%d" % n for n in range(50)) if _on(k, every) != _on(keys[0], every)
        ][:1]
        records = [
            (keys[n % 2], f"{n:04d}".encode() * 100, [("n", str(n).encode())]) for n in range(60)
        ]
        batches = await partition_batches(producer, topic, records)
        partitions = [partition for _, partition, _ in batches]
        assert len(batches) > 10 and sum(b.record_count() for _, _, b in batches) == 60
        assert sorted(partitions[:2]) == sorted(_on(k, every) for k in keys)

        too_large = (b"other", b"x" * (MAX_REQUEST_SIZE + 1), [])
        with pytest.raises(MessageSizeTooLargeError):
            await partition_batches(producer, topic, [records[0], too_large])

        await send_batches(producer, batches)
    finally:
        await producer.stop()
    got = await read_topic(settings, INTAKE_TOPIC, 60)
    for key in keys:
        sent = [(value, tuple(headers)) for k, value, headers in records if k == key]
        assert [(r.value, r.headers) for r in got if r.key == key] == sent


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd", "gzip", "snappy"])
async def test_batches_compressed_as_configured_come_back_as_sent(
    broker, prefix: str, compression: str
) -> None:
    """The services' producer (``make_producer``) compresses its batches as
    ``KAFKA_COMPRESSION_TYPE`` says, and the embedded broker stores and serves them: each
    record, its key and its headers read back byte for byte, in order, on every partition."""
    settings = ServiceSettings(
        **bus_settings(broker.bootstrap, prefix), kafka_compression_type=compression
    )
    await create_topics(settings)
    topic = topic_name(settings, INTAKE_TOPIC)
    producer = make_producer(settings, client_id="test-compression")
    await producer.start()
    try:
        records = [
            (b"key-%d" % (n % 7), encode(ticket(n)).value, [("n", str(n).encode())])
            for n in range(300)
        ]
        await send_batches(producer, await partition_batches(producer, topic, records))
    finally:
        await producer.stop()
    got = await read_topic(settings, INTAKE_TOPIC, 300)
    for key in {k for k, _, _ in records}:
        sent = [(value, tuple(headers)) for k, value, headers in records if k == key]
        assert [(r.value, r.headers) for r in got if r.key == key] == sent


async def test_lz4_batches_hold_the_embedded_broker_to_a_fraction_of_the_memory(
    tmp_path: Path,
) -> None:
    """The embedded broker keeps every batch as it came: the same 20,000 events, sent
    uncompressed to one fresh broker and LZ4-compressed to another, grow the second's resident
    memory by well under half as much (measured: ~3.2x less in the whole suite)."""
    grown: dict[str, float] = {}
    for compression in ("none", "lz4"):
        broker = EmbeddedBroker(log_path=tmp_path / f"{compression}.log").start()
        try:
            assert broker.process is not None
            settings = ServiceSettings(
                **bus_settings(broker.bootstrap, "mem"), kafka_compression_type=compression
            )
            await create_topics(settings)
            topic = topic_name(settings, INTAKE_TOPIC)
            producer = make_producer(settings, client_id="test-memory")
            await producer.start()
            before = _resident_mb(broker.process.pid)
            try:
                for start in range(0, 20_000, 1000):
                    records = [
                        (f"T{n}".encode(), encode(ticket(n)).value, [("n", str(n).encode())])
                        for n in range(start, start + 1000)
                    ]
                    await send_batches(producer, await partition_batches(producer, topic, records))
            finally:
                await producer.stop()
            grown[compression] = _resident_mb(broker.process.pid) - before
        finally:
            broker.stop()
    assert grown["none"] > 5, grown  # the events did take memory uncompressed
    assert grown["lz4"] < grown["none"] / 2, grown


def _resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _on(key: bytes, partitions: list[int]) -> int:
    return int(DefaultPartitioner()(key, partitions, partitions))


async def test_rows_no_commit_of_the_relay_s_process_announced_are_found_by_its_poll(
    harness: Harness,
) -> None:
    """Another process's commit does not wake this relay: its poll asks whether anything is
    pending (on PostgreSQL outside a transaction) and publishes what it finds."""
    await harness.emit(ticket(1))
    pending = is_pending(harness.outbox_table)
    await wait_until(lambda: _count_is(harness, harness.outbox_table, 0, pending), what="sent")
    # SQLite's batch asks for itself: there the answer is always yes.
    idle = not harness.settings.is_sqlite
    assert await harness.relay.may_have_work() is not idle
    async with harness.sessions() as session, session.begin():  # no wake()
        await harness.outbox.add(session, ticket(2))
    assert await harness.relay.may_have_work()
    records = await read_topic(harness.settings, INTAKE_TOPIC, 2)
    assert sorted(r.key for r in records) == [b"20260101-0000001", b"20260101-0000002"]
    await wait_until(lambda: _count_is(harness, harness.outbox_table, 0, pending), what="marked")
    assert await harness.relay.may_have_work() is not idle


async def test_an_idle_relay_asks_less_and_less_often_up_to_the_broker_check(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing written, each poll waits twice as long as the last, up to the broker
    check's interval (four polls here); a wake-up is still answered at once, and a row no
    wake-up announced (another process's) is still found within that interval."""
    await harness.emit(ticket(1))
    await wait_until(
        lambda: _count_is(harness, harness.outbox_table, 0, is_pending(harness.outbox_table))
    )
    asked: list[float] = []
    probe = harness.relay.may_have_work

    async def counted() -> bool:
        asked.append(time.monotonic())
        return await probe()

    monkeypatch.setattr(harness.relay, "may_have_work", counted)
    await asyncio.sleep(2.0)
    # 50 ms polls: 40 in two seconds before; now about one every 200 ms once backed off
    assert 5 <= len(asked) <= 16, len(asked)
    gaps = [b - a for a, b in itertools.pairwise(asked[-4:])]
    assert min(gaps) >= 0.15, gaps
    async with harness.sessions() as session, session.begin():  # no wake()
        await harness.outbox.add(session, ticket(2))
    began = time.monotonic()
    await wait_until(
        lambda: _count_is(harness, harness.outbox_table, 0, is_pending(harness.outbox_table))
    )
    assert time.monotonic() - began < 1.0
    await harness.emit(ticket(3))  # woken
    records = await read_topic(harness.settings, INTAKE_TOPIC, 3)
    assert sorted(r.key for r in records)[-1] == b"20260101-0000003"


async def _ids(h: Harness) -> dict[str, int]:
    """The outbox rows' ids by key."""
    t = h.outbox_table
    async with h.engine.connect() as conn:
        return {key: id for id, key in (await conn.execute(select(t.c.id, t.c.key))).all()}


async def _published_in(h: Harness, *minutes: tuple[Any, int]) -> None:
    """Rewrite the record of publications: (minute, lowest id published in it) each."""
    marks = h.outbox_table.metadata.tables[PUBLISHED_TABLE]
    async with h.engine.begin() as conn:
        await conn.execute(marks.delete())
        await conn.execute(
            marks.insert(),
            [{"published_at": m, "relay": "test", "first_id": first} for m, first in minutes],
        )


async def _marks(h: Harness) -> list[Any]:
    marks = h.outbox_table.metadata.tables[PUBLISHED_TABLE]
    async with h.engine.connect() as conn:
        return list((await conn.execute(select(marks).order_by(*marks.primary_key))).all())


async def test_relay_requeues_retained_rows_for_a_new_broker(harness: Harness) -> None:
    await harness.emit(ticket(1), ticket(2))
    await wait_until(
        lambda: _count_is(harness, harness.outbox_table, 0, is_pending(harness.outbox_table))
    )
    await harness.emit(ticket(3))
    await wait_until(
        lambda: _count_is(harness, harness.outbox_table, 0, is_pending(harness.outbox_table))
    )
    ids = await _ids(harness)
    # The first row published longer ago than the retention window: purged, it does not come
    # back. The others published now, the third created long ago (it waited out an outage, or
    # came back on a new broker): consumers may not have read it yet, so it stays in the window.
    await _published_in(
        harness,
        (utcnow() - timedelta(days=8), ids["20260101-0000001"]),
        (utcnow().replace(second=0, microsecond=0), ids["20260101-0000002"]),
    )
    async with harness.engine.begin() as conn:
        await conn.execute(
            update(harness.outbox_table)
            .where(harness.outbox_table.c.key == "20260101-0000003")
            .values(created_at=utcnow() - timedelta(days=8))
        )
        # Pretend this database last published to another broker.
        await conn.execute(update(harness.bus_state).values(value="some-older-broker"))
    assert await harness.relay.purge_expired() == 1
    published_before = await _marks(harness)
    requeued = await harness.relay.adopt_broker(harness.watch.cluster_id or "")
    assert requeued == 2
    records = await read_topic(harness.settings, INTAKE_TOPIC, 5)
    keys = [r.key for r in records]
    assert keys.count(b"20260101-0000002") == 2 and keys.count(b"20260101-0000003") == 2
    # A replay renews no row's window: were it to, rotations more frequent than the window
    # would keep every row forever (and refill the broker with all of them).
    while await harness.relay.replay_batch():
        pass
    assert await _marks(harness) == published_before
    assert await harness.count(harness.outbox_table, is_pending(harness.outbox_table)) == 0


@pytest.fixture
async def driven(broker, database: Database, prefix: str):
    h = await driven_harness(broker, database, prefix)
    yield h
    await h.stop()


async def _published_all(h: Harness) -> None:
    """Publish every pending row (the relay driven by the test)."""
    while await h.relay.publish_batch():
        pass
    assert await h.count(h.outbox_table, is_pending(h.outbox_table)) == 0


async def _rotated_from(h: Harness, previous: str, unread_since: float | None) -> int:
    """Pretend the broker was rotated away from ``previous`` (with a handover saying where its
    consumers had read to, unless None) and let the relay adopt it: the events re-queued."""
    async with h.engine.begin() as conn:
        await conn.execute(update(h.bus_state).values(value=previous))
    if unread_since is not None:
        await leave_handover(h.settings, Handover(previous, unread_since))
    return await h.relay.adopt_broker(h.watch.cluster_id or "")


async def _replayed_keys(h: Harness, total: int) -> Counter[bytes]:
    """Drain the replay, then count every key on intake's topic (``total`` records expected)."""
    while await h.relay.replay_batch():
        pass
    return Counter(r.key for r in await read_topic(h.settings, INTAKE_TOPIC, total))


async def test_after_a_planned_rotation_only_rows_sent_since_the_handover_are_replayed(
    driven: Harness,
) -> None:
    """Every record published before the handover's time was read by every group: a relay that
    sent all of them itself (its record of sends reaches back far enough) replays the rows of
    the sends completed since, and nothing before."""
    await driven.emit(ticket(1), ticket(2))
    await _published_all(driven)
    unread = time.time()
    await asyncio.sleep(0.01)
    await driven.emit(ticket(3))
    await _published_all(driven)
    assert await _rotated_from(driven, "rotated-broker", unread) == 1
    keys = await _replayed_keys(driven, 4)
    assert keys == Counter({b"20260101-0000001": 1, b"20260101-0000002": 1, b"20260101-0000003": 2})
    # Nothing unread at all: nothing to replay, and the replay is over at once.
    await driven.emit(ticket(4))
    await _published_all(driven)
    assert await _rotated_from(driven, "rotated-again", time.time() + 1) == 0
    assert await driven.relay.replay_batch() == 0


async def test_a_relay_that_did_not_send_since_the_handover_itself_goes_by_the_minutes(
    driven: Harness,
) -> None:
    """A relay started after the handover's time (its predecessor sent those records), or
    with other relays publishing the database's rows, cannot vouch for those sends: the
    minutes of publication since five minutes before the handover decide (a claim stamps its
    minute before its send completes), whoever published in them."""
    await driven.emit(ticket(1), ticket(2))
    await _published_all(driven)
    unread = time.time()
    await driven.emit(ticket(3))
    await _published_all(driven)
    ids = await _ids(driven)
    minute = utcnow().replace(second=0, microsecond=0)
    # Another relay published the first two an hour ago, the third in this minute: only the
    # third is replayed; the record of this relay's own sends is not whole that far back.
    await _published_in(
        driven,
        (minute - timedelta(hours=1), ids["20260101-0000001"]),
        (minute, ids["20260101-0000003"]),
    )
    driven.relay._sends_whole_since = time.time()
    assert await _rotated_from(driven, "rotated-broker", unread) == 1
    # The minutes of the first two within five minutes of the handover: both come back too.
    await _published_in(
        driven,
        (minute - timedelta(minutes=4), ids["20260101-0000001"]),
        (minute, ids["20260101-0000003"]),
    )
    assert await _rotated_from(driven, "rotated-again", unread) == 3


async def test_a_rotation_without_a_handover_for_the_broker_left_replays_everything(
    driven: Harness,
) -> None:
    """A broker that crashed gets no handover, and a relay that slept through a rotation finds
    the handover of another broker than the one it last published to: every retained row."""
    await driven.emit(ticket(1), ticket(2))
    await _published_all(driven)
    await leave_handover(driven.settings, Handover("a-broker-in-between", time.time()))
    assert await _rotated_from(driven, "long-gone-broker", None) == 2
    keys = await _replayed_keys(driven, 4)
    assert keys == Counter({b"20260101-0000001": 2, b"20260101-0000002": 2})


async def test_purge_deletes_only_published_rows_past_retention(
    broker, database: Database, prefix: str
) -> None:
    """Rows are kept for the window from their publication, read from the minutes of
    publication (driven: no relay running meanwhile to publish the row made pending again)."""
    harness = await driven_harness(broker, database, prefix)
    try:
        await _purge_keeps_the_window(harness)
    finally:
        await harness.stop()


async def _purge_keeps_the_window(harness: Harness) -> None:
    await harness.emit(ticket(1), ticket(2))
    assert await harness.relay.publish_batch() == 2
    await harness.emit(ticket(3), ticket(4))
    assert await harness.relay.publish_batch() == 2
    ids = await _ids(harness)
    long_ago = utcnow() - timedelta(days=8)
    pending = harness.outbox_table.metadata.tables[PENDING_TABLE]
    async with harness.engine.begin() as conn:
        await conn.execute(update(harness.outbox_table).values(created_at=long_ago))
        await conn.execute(pending.insert().values(id=ids["20260101-0000002"]))
    # Rows 1 and 2 (pending again) below the first published within the window, 4; row 3
    # published again within the minute that began just before the cutoff.
    cutoff = utcnow() - timedelta(days=harness.settings.outbox_retention_days)
    await _published_in(
        harness,
        (long_ago, ids["20260101-0000001"]),
        ((cutoff - timedelta(seconds=30)).replace(microsecond=0), ids["20260101-0000003"]),
        (utcnow().replace(second=0, microsecond=0), ids["20260101-0000004"]),
    )
    # Only the row last published past the window goes: the pending one, the one created long
    # ago but published just now (a consumer may not have read it) and the one published in a
    # minute that ends after the cutoff stay; so do the minutes that may still cover a row.
    assert await harness.relay.purge_expired() == 1
    assert set((await _ids(harness)).values()) == {ids[f"20260101-000000{n}"] for n in (2, 3, 4)}
    assert [m.first_id for m in await _marks(harness)] == [
        ids["20260101-0000003"],
        ids["20260101-0000004"],
    ]
    # Nothing published within the window: every row not pending is past it.
    await _published_in(harness, (long_ago, ids["20260101-0000004"]))
    assert await harness.relay.purge_expired() == 2
    assert list((await _ids(harness)).values()) == [ids["20260101-0000002"]]


async def test_duplicate_delivery_is_applied_once_and_counted(harness: Harness) -> None:
    event = ticket(1)
    await harness.deliver(event, event, event)
    harness.consume(harness.record)
    await _duplicates_counted(harness, 2, what="two duplicates counted")
    assert await harness.count(harness.applied) == 1
    assert await harness.count(harness.inbox_table) == 1


async def test_offsets_are_committed_after_the_database_commit(harness: Harness) -> None:
    await harness.emit(*(ticket(n) for n in range(10)))
    harness.consume(harness.record)
    await wait_until(lambda: _count_is(harness, harness.applied, 10), what="ten applied")
    await wait_until(
        _committed_total(harness, 10), what="the group's committed offsets to reach 10"
    )


async def test_a_run_whose_commit_fails_is_counted_once_when_redelivered(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone record goes one by one. Its transaction's commit fails (the connection reset): the
    run is redelivered and applied again, and the counters say what was committed — one
    duplicate refused, one event consumed — not what was attempted."""
    first = ticket(1)
    await harness.emit(first)
    harness.consume(harness.record)
    await wait_until(lambda: _count_is(harness, harness.applied, 1), what="one applied")
    await wait_until(_committed_total(harness, 1), what="its offset committed")

    fired: list[int] = []
    commit = SessionTransaction.commit

    def fails_once(self: SessionTransaction, *args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(1)
            raise ConnectionResetError("the commit did not get through")
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(SessionTransaction, "commit", fails_once)
    await harness.deliver(first)  # a duplicate, alone in its fetch: applied one by one
    await wait_until(_committed_total(harness, 2), what="the duplicate's offset committed")
    monkeypatch.undo()
    await harness.deliver(second := ticket(2))
    await wait_until(lambda: _count_is(harness, harness.applied, 2), what=second.ticket_id)
    await wait_until(_committed_total(harness, 3), what="every offset committed")
    assert fired == [1]
    counted = harness.metrics.events_duplicate.labels("intake.ticket.received")._value.get()
    consumed = harness.metrics.events_consumed.labels("intake.ticket.received")._value.get()
    assert (counted, consumed) == (1, 2)


async def test_transient_failure_is_retried_then_applied(harness: Harness) -> None:
    attempts: list[str] = []

    async def flaky(event: TicketReceived, *, session) -> None:
        attempts.append(event.ticket_id)
        if len(attempts) < 3:
            raise ConnectionError("department registry unavailable")
        await harness.record(event, session=session)

    harness.settings.consumer_max_tries = 5
    await harness.emit(ticket(1))
    harness.consume(flaky)
    await wait_until(lambda: _count_is(harness, harness.applied, 1), what="applied after retries")
    assert attempts == ["20260101-0000001"] * 3
    assert harness.metrics.events_failed.labels("intake.ticket.received")._value.get() == 2
    assert harness.metrics.events_dead_lettered.labels("intake.ticket.received")._value.get() == 0


async def test_poison_event_goes_to_dead_letter_and_consumer_moves_on(harness: Harness) -> None:
    async def picky(event: TicketReceived, *, session) -> None:
        if event.ticket_id.endswith("0000001"):
            raise ValueError("category 0102 has no owner")
        await harness.record(event, session=session)

    await harness.emit(ticket(1), ticket(2))
    harness.consume(picky)
    await wait_until(lambda: _count_is(harness, harness.applied, 1), what="the good event applied")
    dead = await read_topic(harness.settings, DEAD_LETTER_TOPIC, 1)
    assert header(dead[0].headers, "x-dlq-kind") == "handler_failed"
    assert "category 0102 has no owner" in (header(dead[0].headers, "x-dlq-reason") or "")
    assert header(dead[0].headers, "ce_type") == "cn.fengqiao.intake.ticket.received.v1"
    assert (
        await harness.count(harness.inbox_table, harness.inbox_table.c.status == "dead_lettered")
        == 1
    )
    assert harness.metrics.events_failed.labels("intake.ticket.received")._value.get() == 3


async def test_batch_handler_takes_a_fetch_at_once_and_each_event_once(
    harness: Harness,
) -> None:
    calls: list[list[str]] = []

    async def many(events: list[TicketReceived], *, session) -> None:
        calls.append([e.ticket_id for e in events])
        for event in events:
            await harness.record(event, session=session)

    events = [ticket(n) for n in range(40)]
    await harness.emit(*events)
    await harness.deliver(events[3], events[7])  # delivered again: applied once, counted
    harness.consume(Batch(many))
    await wait_until(lambda: _count_is(harness, harness.applied, 40), what="forty applied")
    await _duplicates_counted(harness, 2, what="two duplicates counted")
    handed = [t for call in calls for t in call]
    print(f"batch handler calls: {[len(c) for c in calls]}")
    assert sorted(handed) == sorted(e.ticket_id for e in events)  # each once, none twice
    assert max(len(c) for c in calls) > 1, "a fetch is handed over together"
    assert await harness.count(harness.inbox_table) == 40


async def test_a_deduplicating_batch_handler_answers_seen_itself(harness: Harness) -> None:
    events = [ticket(n) for n in range(40)]
    held = {str(events[5].event_id)}  # in the handler's ledger already (a rebuild folded it)
    handed: list[str] = []

    async def many(batch: list[TicketReceived], *, session) -> list[str]:
        fresh = [e for e in batch if str(e.event_id) not in held]
        handed.extend(str(e.event_id) for e in batch)
        held.update(str(e.event_id) for e in fresh)
        for event in fresh:
            await harness.record(event, session=session)
        return [str(e.event_id) for e in fresh]

    await harness.emit(*events)
    await harness.deliver(events[3], events[7])  # delivered again: refused by the handler
    harness.consume(Batch(many, deduplicates=True))
    await wait_until(lambda: _count_is(harness, harness.applied, 39), what="39 applied")
    await _duplicates_counted(
        harness, 3, what="the held one and the two redelivered counted as duplicates"
    )
    assert str(events[5].event_id) in handed, "the handler, not the inbox, refused it"
    assert await harness.count(harness.inbox_table) == 39  # a refused event gets no inbox row


async def test_a_batch_handler_whose_rows_are_the_record_writes_no_inbox_rows(
    harness: Harness,
) -> None:
    events = [ticket(n) for n in range(20)]

    async def many(batch: list[TicketReceived], *, session) -> list[str]:
        t = harness.applied  # the handler's own ledger, keyed by event id
        ids = [str(e.event_id) for e in batch]
        held = set(
            (await session.execute(select(t.c.event_id).where(t.c.event_id.in_(ids)))).scalars()
        )
        fresh = [e for e in batch if str(e.event_id) not in held]
        for event in fresh:
            await harness.record(event, session=session)
        return [str(e.event_id) for e in fresh]

    await harness.emit(*events)
    await harness.deliver(events[3], events[7])  # delivered again: refused by the handler
    harness.consume(Batch(many, deduplicates=True, inbox_rows=False))
    await wait_until(lambda: _count_is(harness, harness.applied, 20), what="twenty applied")
    await _duplicates_counted(harness, 2, what="the two redelivered refused")
    assert await harness.count(harness.inbox_table) == 0


def test_a_batch_handler_without_inbox_rows_must_deduplicate() -> None:
    async def many(batch: list[TicketReceived], *, session) -> None:
        return None

    with pytest.raises(ValueError, match=r"inbox_rows=False.*deduplicates=True"):
        Batch(many, inbox_rows=False)


class _Tallied:
    """A staging handler (``Batch.stage``): the stage inserts the events into ``applied``
    (refusing ids it holds, as evaluation's ledger) and the write adds how many it applied to
    a running total — counted twice if an event were ever applied twice."""

    def __init__(self, harness: Harness, fail_at: int) -> None:
        self.harness = harness
        self.total = Table(
            "tally",
            harness.metadata,
            Column("name", String(8), primary_key=True),
            Column("n", Integer),
        )
        self.fail_at = fail_at
        self.writes = 0
        self.carried: list[frozenset[str]] = []
        # per write: (events it applies, how many of their inbox rows its transaction held)
        self.inbox_at_write: list[tuple[int, int]] = []

    async def create(self) -> None:
        async with self.harness.engine.begin() as conn:
            await conn.run_sync(self.total.create)
            await conn.execute(self.total.insert().values(name="all", n=0))

    async def stage(self, events: list[TicketReceived], *, session, carry) -> Any:
        if carry is not None:
            self.carried.append(carry)
        ids = [str(e.event_id) for e in events if str(e.event_id) not in (carry or ())]
        applied = await bulk.upsert(
            session,
            self.harness.applied,
            [{"event_id": i, "ticket_id": None} for i in ids],
            key=["event_id"],
            on_conflict=bulk.OnConflict.NOTHING,
            returning="event_id",
        )
        return _TallyStage(self, applied)

    async def many(self, events: list[TicketReceived], *, session) -> list[str]:
        stage = await self.stage(events, session=session, carry=None)
        return await stage.write(session)

    async def count(self) -> int:
        async with self.harness.engine.connect() as conn:
            return int((await conn.execute(select(self.total.c.n))).scalar_one())


class _TallyStage:
    def __init__(self, tallied: _Tallied, applied: list[str]) -> None:
        self.tallied = tallied
        self.applied = applied
        self.carry = frozenset(applied)

    async def write(self, session) -> list[str]:
        t = self.tallied
        inbox = t.harness.inbox_table
        held = await session.scalar(select(func.count()).where(inbox.c.event_id.in_(self.applied)))
        t.inbox_at_write.append((len(self.applied), int(held or 0)))
        await session.execute(update(t.total).values(n=t.total.c.n + len(self.applied)))
        t.writes += 1
        if t.writes == t.fail_at:
            raise ConnectionResetError("the commit did not get through")
        return self.applied


async def test_a_staging_handler_s_fetches_are_pipelined_and_a_failed_one_redone(
    harness: Harness, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """On PostgreSQL a staging handler's fetches overlap: fetch N+1 is staged (given N's
    carry) while N is written. N's write fails once: N+1's staging is thrown away, both are
    done again, every event applied once (the running total is not counted twice), the
    redelivered ones refused, and every offset committed. On SQLite nothing overlaps."""
    caplog.set_level(logging.INFO, logger="shared.inbox")
    harness.settings.consumer_batch_max_records = 6
    tallied = _Tallied(harness, fail_at=3)
    await tallied.create()
    events = [ticket(n) for n in range(60)]
    await harness.emit(*events)
    await harness.deliver(events[3], events[40])  # delivered again: refused
    harness.consume(Batch(tallied.many, deduplicates=True, stage=tallied.stage))
    await wait_until(lambda: _count_is(harness, harness.applied, 60), what="sixty applied")
    await _duplicates_counted(harness, 2, what="two duplicates counted")
    assert await harness.count(harness.inbox_table) == 60
    await wait_until(_committed_total(harness, 62), what="every offset committed")
    assert await tallied.count() == 60  # the failed write's addition rolled back, none twice
    assert tallied.writes > tallied.fail_at
    if database.kind == "postgres":
        assert tallied.carried, "a fetch was staged while the one before was in flight"
        assert "fetch not committed" in caplog.text  # redone by the pipeline, not a fallback
        # pipelined, a fetch's inbox rows are written as it is staged, before its writes
        assert any(n and held == n for n, held in tallied.inbox_at_write), tallied.inbox_at_write
    else:
        assert not tallied.carried


class _ScriptedConsumer:
    """Stands in for the Kafka consumer: hands out scripted fetches, each under an assignment,
    then moves the watch's epoch on (the loop ends); records commits and seeks."""

    def __init__(self, watch: BrokerWatch, fetches: list[tuple[set[int], list[ConsumerRecord]]]):
        self.watch = watch
        self.fetches = fetches
        self.current: set[int] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        await asyncio.sleep(0)
        if not self.fetches:
            self.watch.epoch += 1
            return {}
        partitions, records = self.fetches.pop(0)
        self.current = partitions
        batches: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in records:
            batches.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return batches

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", p) for p in self.current}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def _record(partition: int, offset: int, event: TicketReceived) -> ConsumerRecord:
    encoded = encode(event)
    return ConsumerRecord(
        "t", partition, offset, 0, 0, encoded.key, encoded.value, None, 0, 0, encoded.headers
    )


async def test_no_carry_crosses_a_rebalance_and_a_failed_fetch_s_successor_is_fetched_again(
    harness: Harness, database: Database
) -> None:
    """The pipelined loop, fetch by fetch (the broker scripted): the second fetch is staged on
    the first's carry; the third comes after the assignment changed, so it waits for the second
    and is applied unpipelined, with no carry; the fifth is staged on the fourth's carry, the
    fourth's write fails, so the fifth is thrown away and sought back to be fetched again, and
    the fourth redone alone. Offsets are committed for the committed fetches only, in order."""
    if database.kind != "postgres":
        pytest.skip("the consumer pipelines on PostgreSQL only")
    tallied = _Tallied(harness, fail_at=4)
    await tallied.create()
    given: list[Any] = []

    async def stage(events: list[TicketReceived], *, session, carry) -> Any:
        given.append(carry)
        return await tallied.stage(events, session=session, carry=carry)

    consumer = harness.consume(Batch(tallied.many, deduplicates=True, stage=stage))
    for task in harness.tasks[-1:]:  # driven by hand below
        task.cancel()
    events = [ticket(n) for n in range(15)]
    fetch = [
        [_record(n % 2, n, e) for n, e in enumerate(events[i : i + 3], i)] for i in (0, 3, 6, 9, 12)
    ]
    scripted = _ScriptedConsumer(
        harness.watch,
        [({0, 1}, fetch[0]), ({0, 1}, fetch[1]), ({0}, fetch[2]), ({0}, fetch[3]), ({0}, fetch[4])],
    )
    await consumer._consume_pipelined(cast(Any, scripted), harness.watch.epoch)
    ids = [frozenset(str(e.event_id) for e in events[i : i + 3]) for i in (0, 3, 6, 9, 12)]
    # Staged: 1 (none in flight), 2 (on 1's carry); 3 came after the rebalance: 2 settled
    # first, 3 applied unpipelined (not staged); 4 (none in flight), 5 (on 4's carry, thrown
    # away when 4 failed); 4 then redone unpipelined.
    assert given == [None, ids[0], None, ids[3]]
    assert (TopicPartition("t", 0), fetch[4][0].offset) in scripted.seeks
    committed = [max(c.values()) for c in scripted.commits]
    assert committed == sorted(committed)  # in order, each after its commit
    assert await harness.count(harness.applied) == 12  # fetch 5: fetched again later
    assert await tallied.count() == 12


def _committed_total(harness: Harness, expected: int) -> Callable[[], Awaitable[bool]]:
    """Whether the harness group's committed offsets add up to ``expected``."""

    async def check() -> bool:
        assert harness.watch.cluster_id is not None
        group = consumer_group_id(harness.settings, "harness", harness.watch.cluster_id)
        probe = AIOKafkaConsumer(
            bootstrap_servers=harness.settings.kafka_bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
        )
        await probe.start()
        try:
            topic = topic_name(harness.settings, INTAKE_TOPIC)
            total = 0
            for p in probe.partitions_for_topic(topic) or set():
                total += await probe.committed(TopicPartition(topic, p)) or 0
            return total == expected
        finally:
            await probe.stop()

    return check


async def test_events_an_only_handler_refuses_are_passed_over_before_the_inbox(
    harness: Harness,
) -> None:
    """Refused events get no inbox row and are counted; a fetch of nothing but refused events
    is passed over too (offsets move on: the accepted event after them is applied)."""

    def even(event: TicketReceived) -> bool:
        return int(event.ticket_id[-7:]) % 2 == 0

    mixed = [ticket(n) for n in range(10)]
    await harness.emit(*mixed)
    harness.consume(Only(harness.record, when=even))
    await wait_until(lambda: _count_is(harness, harness.applied, 5), what="the even five applied")
    refused = harness.metrics.events_passed_over.labels("intake.ticket.received")
    await wait_until(lambda: _true(refused._value.get() == 5), what="the odd five passed over")
    assert await harness.count(harness.inbox_table) == 5

    await harness.emit(ticket(11), ticket(13))
    await wait_until(lambda: _true(refused._value.get() == 7), what="a fetch of refused ones")
    await harness.emit(ticket(12))
    await wait_until(lambda: _count_is(harness, harness.applied, 6), what="the next even applied")
    assert await harness.count(harness.inbox_table) == 6


async def _all_published(harness: Harness) -> None:
    await wait_until(
        lambda: _count_is(harness, harness.outbox_table, 0, is_pending(harness.outbox_table)),
        what="rows marked published",
    )


async def test_records_an_only_handler_s_screen_turns_away_are_passed_over_undecoded(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A screen looks at a record's payload bytes before decoding: what it turns away is not
    decoded, gets no inbox row and is counted as passed over; what it lets through is decoded
    and still goes to ``when``."""
    import shared.inbox

    decoded: list[str] = []
    real_decode = shared.inbox.decode

    def counting_decode(value: Any, headers: Any, key: Any = None) -> Any:
        event = real_decode(value, headers, key)
        decoded.append(event.ticket_id)
        return event

    monkeypatch.setattr(shared.inbox, "decode", counting_decode)

    def below_eight(event: TicketReceived) -> bool:
        return int(event.ticket_id[-7:]) < 8

    def even_digit(payload: bytes) -> bool:  # the ticket ids' last digit, by the bytes alone
        return any(b'-000000%d"' % d in payload for d in (0, 2, 4, 6, 8))

    await harness.emit(*(ticket(n) for n in range(10)))
    harness.consume(Only(harness.record, when=below_eight, screen=even_digit))
    refused = harness.metrics.events_passed_over.labels("intake.ticket.received")
    await wait_until(lambda: _count_is(harness, harness.applied, 4), what="0, 2, 4, 6 applied")
    try:
        await wait_until(
            lambda: _true(refused._value.get() == 6), what="five odd and 8 passed over"
        )
    except AssertionError as exc:  # once, under a loaded full run: say what was counted
        raise AssertionError(
            f"{exc}: {refused._value.get()} passed over, decoded {sorted(decoded)}"
        ) from None
    assert sorted(decoded) == [ticket(n).ticket_id for n in (0, 2, 4, 6, 8)]
    assert await harness.count(harness.inbox_table) == 4


async def test_a_fetch_of_nothing_to_act_on_opens_no_transaction(harness: Harness) -> None:
    """A fetch from both partitions whose events are all passed over commits its offsets
    without a database session (mediation reads every assignment and acts on few)."""
    await harness.emit(*(ticket(n) for n in range(10)))
    await _all_published(harness)
    opened: list[int] = []
    sessions = harness.sessions

    def counting_sessions(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return sessions(*args, **kwargs)

    harness.sessions = cast(Any, counting_sessions)
    harness.consume(Only(harness.record, when=lambda event: False))
    refused = harness.metrics.events_passed_over.labels("intake.ticket.received")
    await wait_until(lambda: _true(refused._value.get() == 10), what="all ten passed over")
    await wait_until(_committed_total(harness, 10), what="the offsets committed")
    assert opened == []


async def test_a_fetch_s_events_are_counted_a_type_at_a_time(harness: Harness) -> None:
    """Applied events are added to their counter once a type a fetch, not once an event
    (looking up a labelled child costs more than passing an event over)."""
    labelled: list[str] = []
    consumed = harness.metrics.events_consumed

    class Counting:
        def labels(self, *values: str) -> Any:
            labelled.extend(values)
            return consumed.labels(*values)

    harness.metrics.events_consumed = cast(Any, Counting())
    await harness.emit(*(ticket(n) for n in range(10)))
    await _all_published(harness)

    async def many(events: list[TicketReceived], *, session: Any) -> None:
        for event in events:
            await harness.record(event, session=session)

    harness.consume(Batch(many))
    await wait_until(lambda: _count_is(harness, harness.applied, 10), what="all ten applied")
    counter = consumed.labels("intake.ticket.received")
    await wait_until(lambda: _true(counter._value.get() == 10), what="all ten counted")
    assert 1 <= len(labelled) < 10, labelled


async def test_poison_event_in_a_batch_fails_alone(harness: Harness) -> None:
    together: list[int] = []

    async def many(events: list[TicketReceived], *, session) -> None:
        together.append(len(events))
        for event in events:
            await harness.record(event, session=session)
            if event.ticket_id.endswith("0000005"):
                raise ValueError("category 0102 has no owner")

    await harness.emit(*(ticket(n) for n in range(12)))
    harness.consume(Batch(many))
    await wait_until(lambda: _count_is(harness, harness.applied, 11), what="the good ones applied")
    dead = await read_topic(harness.settings, DEAD_LETTER_TOPIC, 1)
    assert "category 0102 has no owner" in (header(dead[0].headers, "x-dlq-reason") or "")
    assert (
        await harness.count(harness.inbox_table, harness.inbox_table.c.status == "dead_lettered")
        == 1
    )
    assert await harness.count(harness.inbox_table) == 12
    assert max(together) > 1, "the batch was tried together before one by one"


async def test_undecodable_record_is_dead_lettered_at_once(harness: Harness) -> None:
    good = encode(ticket(2))
    bad_payload = good.value.replace(b'"title":"t2",', b"")
    producer = AIOKafkaProducer(bootstrap_servers=harness.settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        topic = topic_name(harness.settings, INTAKE_TOPIC)
        bad_headers = [(k, b"bad-id" if k == "ce_id" else v) for k, v in good.headers]
        await producer.send_and_wait(topic, bad_payload, key=good.key, headers=bad_headers)
        await producer.send_and_wait(topic, b"not json at all", key=good.key)
        await producer.send_and_wait(topic, good.value, key=good.key, headers=good.headers)
    finally:
        await producer.stop()
    harness.consume(harness.record)
    await wait_until(lambda: _count_is(harness, harness.applied, 1), what="the good record applied")
    dead = await read_topic(harness.settings, DEAD_LETTER_TOPIC, 2)
    reasons = sorted(header(r.headers, "x-dlq-reason") or "" for r in dead)
    assert any("title" in reason for reason in reasons), reasons
    assert all(header(r.headers, "x-dlq-kind") == "undecodable" for r in dead)


async def test_a_known_type_the_service_does_not_act_on_is_skipped_unread(
    harness: Harness,
) -> None:
    """Skipped from its ce_type header: not decoded, so even a broken body is not dead-lettered
    (it is not this service's to judge); a broken body of a type it acts on still is."""
    good = encode(ticket(3))
    renamed = {"ce_type": b"cn.fengqiao.intake.feedback.received.v1", "ce_id": b"feedback-id"}
    feedback = [(k, renamed.get(k, v)) for k, v in good.headers]
    broken = [(k, b"broken-id" if k == "ce_id" else v) for k, v in good.headers]
    producer = AIOKafkaProducer(bootstrap_servers=harness.settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        topic = topic_name(harness.settings, INTAKE_TOPIC)
        await producer.send_and_wait(topic, b"{broken", key=good.key, headers=feedback)
        await producer.send_and_wait(topic, b"{broken", key=good.key, headers=broken)
        await producer.send_and_wait(topic, good.value, key=good.key, headers=good.headers)
    finally:
        await producer.stop()
    harness.consume(harness.record)
    await wait_until(lambda: _count_is(harness, harness.applied, 1), what="the good record applied")
    dead = await read_topic(harness.settings, DEAD_LETTER_TOPIC, 1)
    assert [header(r.headers, "ce_type") for r in dead] == ["cn.fengqiao.intake.ticket.received.v1"]
    await asyncio.sleep(1)  # nothing else arrives on the dead-letter topic
    assert len(await read_topic(harness.settings, DEAD_LETTER_TOPIC, 1)) == 1


async def test_replay_requeues_events_since_a_time(harness: Harness) -> None:
    await harness.emit(ticket(1), ticket(2))
    unpublished = is_pending(harness.outbox_table)
    await wait_until(lambda: _count_is(harness, harness.outbox_table, 0, unpublished))
    async with harness.engine.begin() as conn:
        await conn.execute(
            update(harness.outbox_table)
            .where(harness.outbox_table.c.key == "20260101-0000001")
            .values(created_at=utcnow() - timedelta(hours=2))
        )
    assert await harness.relay.requeue_since(utcnow() - timedelta(hours=1)) == 1
    records = await read_topic(harness.settings, INTAKE_TOPIC, 3)
    assert [r.key for r in records].count(b"20260101-0000002") == 2


async def test_a_new_broker_with_fewer_partitions_than_the_producer_knew_gets_every_record(
    database: Database, prefix: str, tmp_path: Path
) -> None:
    """Right after a rotation tansu may auto-create a topic with 4 partitions (a client asked for
    it before anything created it with 6), and it acknowledges records sent to partitions the
    topic lacks while keeping none. A producer that kept sending across the restart still holds
    the old broker's map of 6: the relay must not replay through it. (Topics are created with
    6 here, more than the 4 of an auto-created one, whatever the default count is.)"""
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    settings = ServiceSettings(
        **bus_settings(broker.bootstrap, prefix),
        **database.settings_for("harness"),
        kafka_topic_partitions=6,
    )
    h = Harness(settings)
    emitted: list[TicketReceived] = []

    async def keep_publishing() -> None:
        """The relay between two looks at the broker: emit and publish, errors waited out."""
        while True:
            event = ticket(len(emitted) + 1)
            await h.emit(event)
            emitted.append(event)  # only once stored: the task is cancelled at some point
            with contextlib.suppress(Exception):
                await h.relay.publish_batch()
            await asyncio.sleep(0.02)

    try:
        await create_topics(settings)
        await h.start(relay_task=False)  # driven step by step, as its loop would
        await h.relay.check_broker()
        publishing = asyncio.create_task(keep_publishing())
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.restart)
        admin = make_admin(settings, client_id="auto-create")
        await admin.start()
        try:  # what tansu's auto-create makes, if a send has not made it already
            await admin.create_topics([NewTopic(topic_name(settings, INTAKE_TOPIC), 4, 1)])
            partitions = await admin.describe_topics([topic_name(settings, INTAKE_TOPIC)])
        finally:
            await admin.close()
        assert len(partitions[0]["partitions"]) == 4
        await asyncio.sleep(1.5)
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        assert await h.count(h.outbox_table, is_pending(h.outbox_table)) <= 1
        await h.relay.check_broker()  # a new cluster id: a new producer, and the replay
        while await h.relay.publish_batch():
            pass

        wanted = {str(t.event_id) for t in emitted}
        assert await _event_ids_on(settings, INTAKE_TOPIC, wanted) == wanted
    finally:
        await h.stop()
        broker.stop()


async def test_relays_sharing_a_lease_publish_through_its_holder_alone(
    harness: Harness, tmp_path: Any
) -> None:
    """uvicorn's workers of one service: one publishes, the other takes over when it stops."""
    await harness.stop()
    harness.engine = create_engine(harness.settings)

    def relay(lease: HostLease) -> OutboxRelay:
        return OutboxRelay(
            engine=harness.engine,
            outbox=harness.outbox_table,
            bus_state=harness.bus_state,
            settings=harness.settings,
            metrics=ServiceMetrics("harness"),
            watch=BrokerWatch(),
            client_id="harness",
            lease=lease,
        )

    lease = HostLease(tmp_path / "relay.lock")
    assert lease.held()  # the first worker's, before the other asks
    holder, other = relay(lease), relay(HostLease(tmp_path / "relay.lock"))
    holder_task = asyncio.create_task(holder.run())
    other_task = asyncio.create_task(other.run())
    harness.tasks = [other_task]
    await harness.emit(ticket(1), ticket(2))
    await wait_until(lambda: _true(holder.published == 2), what="the holder to publish")
    await asyncio.sleep(0.5)  # several of the other relay's polls
    assert other.published == 0
    holder_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder_task
    harness.relay = other
    await harness.emit(ticket(3))
    await wait_until(lambda: _true(other.published == 1), what="the other relay to take over")
    assert len(await read_topic(harness.settings, INTAKE_TOPIC, 3)) == 3


async def test_under_a_stream_of_commits_the_relay_sends_a_batch_per_busy_linger(
    broker: EmbeddedBroker, database: Database, prefix: str
) -> None:
    """Every commit wakes the relay; while its batches find rows, the next one begins no
    sooner than ``outbox_linger_busy_ms`` after the last began (fewer, larger produce requests
    and record batches), and every event still goes out. After an idle spell a wake-up waits
    only ``outbox_linger_ms``."""
    settings = ServiceSettings(
        **bus_settings(broker.bootstrap, prefix),
        **database.settings_for("harness"),
        outbox_linger_ms=5,
        outbox_linger_busy_ms=400,
    )
    await create_topics(settings)
    h = Harness(settings)
    await h.start(relay_task=False)
    batches: list[tuple[float, int]] = []
    publish = h.relay.publish_batch

    async def timed() -> int:
        began = time.monotonic()
        sent = await publish()
        batches.append((began, sent))
        return sent

    h.relay.publish_batch = timed  # type: ignore[method-assign]
    h.tasks.append(asyncio.create_task(h.relay.run()))
    try:
        await wait_until(lambda: _true(h.watch.cluster_id is not None), what="the broker")
        for n in range(30):  # a commit, and so a wake-up, every ~20 ms for ~0.6 s
            await h.emit(ticket(n))
            await asyncio.sleep(0.02)
        await wait_until(lambda: _true(h.relay.published == 30), what="every event sent")
        found = [(began, sent) for began, sent in batches if sent]
        assert len(found) >= 2
        after_rows = [
            nxt - began for (began, sent), (nxt, _) in itertools.pairwise(batches) if sent
        ]
        assert min(after_rows) >= 0.39, after_rows
        assert len(await read_topic(settings, INTAKE_TOPIC, 30)) == 30
        now = time.monotonic()
        assert h.relay._linger(False, now) == pytest.approx(0.005)
        assert h.relay._linger(True, now) == pytest.approx(0.4, abs=0.01)
        assert h.relay._linger(True, now - 1.0) == pytest.approx(0.005)
    finally:
        await h.stop()
