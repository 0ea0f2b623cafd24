"""An outbox row is pending while ``outbox_pending`` holds its id: every writer's rows get one in
their own transaction, the relay's claim takes it away and never writes the outbox row again,
and every service's migration carries what was pending and when the rest was published (and its
downgrade brings ``published_at`` back)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Column, MetaData, Table, column, inspect, select, text
from sqlalchemy import table as sa_table
from sqlalchemy.ext.asyncio import AsyncEngine

from fengqiao import registry
from shared import bulk, db
from shared.bus import BrokerWatch
from shared.db import AwareDateTime
from shared.events import INTAKE_TOPIC, encode
from shared.events.base import utcnow
from shared.metrics import ServiceMetrics
from shared.migrate import alembic_config
from shared.outbox import (
    PENDING_TABLE,
    PUBLISHED_TABLE,
    Outbox,
    OutboxRelay,
    bus_tables,
    event_row,
    record_row,
)
from shared.settings import ServiceSettings
from tests.integration.shared.test_bus import ticket
from tests.support import Database

# each service's revision before the pending table
BEFORE = {
    "intake": "intake_tickets_fillfactor",
    "dispatch": "dispatch_event_id_not_unique",
    "mediation": "mediation_event_id_not_unique",
    "evaluation": "0015_event_id_not_unique",
}


def _old_outbox() -> Table:
    """The outbox as it was before: with ``published_at``."""
    outbox = bus_tables(MetaData())[0]
    columns = [Column(c.name, c.type) for c in outbox.columns]
    return Table("outbox", MetaData(), *columns, Column("published_at", AwareDateTime()))


async def _ids(engine: AsyncEngine, table: str) -> list[int]:
    async with engine.connect() as conn:
        ids = sa_table(table, column("id")).c.id
        rows = await conn.execute(select(ids).order_by(ids))
        return [r[0] for r in rows]


@pytest.mark.parametrize("service", sorted(BEFORE))
async def test_the_migration_keeps_what_is_pending_and_when_the_rest_was_published(
    database: Database, service: str
) -> None:
    settings = ServiceSettings(**database.settings_for(f"{service}_pd"))
    await db.ensure_schema(settings)
    config = alembic_config(registry.SERVICES[service].migrations, settings)
    await asyncio.to_thread(command.upgrade, config, BEFORE[service])
    engine = db.create_engine(settings)
    now = utcnow()
    long_ago = now - timedelta(days=8, seconds=5)
    recently = now - timedelta(minutes=2)
    try:
        old = _old_outbox()
        async with engine.begin() as conn:
            for n, published in enumerate((long_ago, recently, None, recently + timedelta(1))):
                await conn.execute(
                    old.insert(), [{**event_row(ticket(n)), "published_at": published}]
                )
        ids = await _ids(engine, "outbox")

        await asyncio.to_thread(command.upgrade, config, "head")
        tables = bus_tables(MetaData())[0].metadata.tables
        assert await _ids(engine, PENDING_TABLE) == [ids[2]]
        async with engine.connect() as conn:
            marks = (await conn.execute(select(tables[PUBLISHED_TABLE]))).all()
            columns = await conn.run_sync(lambda s: inspect(s).get_columns("outbox"))
        assert sorted((m.published_at, m.first_id) for m in marks) == [
            (long_ago.replace(second=0, microsecond=0), ids[0]),
            (recently.replace(second=0, microsecond=0), ids[1]),
            ((recently + timedelta(1)).replace(second=0, microsecond=0), ids[3]),
        ]
        assert "published_at" not in {c["name"] for c in columns}
        # the migrated table's trigger: a new row is pending
        async with engine.begin() as conn:
            await conn.execute(tables["outbox"].insert(), [event_row(ticket(9))])
        pending = await _ids(engine, PENDING_TABLE)
        assert pending[0] == ids[2] and len(pending) == 2

        await asyncio.to_thread(command.downgrade, config, BEFORE[service])
        async with engine.connect() as conn:
            published = dict((await conn.execute(select(old.c.id, old.c.published_at))).all())
            indexes = await conn.run_sync(lambda s: inspect(s).get_indexes("outbox"))
        assert {i for i, at in published.items() if at is None} == set(pending)
        assert all(at >= now for i, at in published.items() if i not in pending)
        assert "ix_outbox_pending" in {i["name"] for i in indexes}
        # no trigger is left to write into a table that is gone
        async with engine.begin() as conn:
            await conn.execute(old.insert(), [{**event_row(ticket(10)), "published_at": None}])

        await asyncio.to_thread(command.upgrade, config, "head")
        assert len(await _ids(engine, PENDING_TABLE)) == 3
    finally:
        await engine.dispose()


class _Sent:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def __call__(self, rows: Any) -> None:
        self.rows += rows


async def _relay(
    database: Database, name: str, **settings: Any
) -> tuple[MetaData, AsyncEngine, OutboxRelay]:
    """A schema of its own, the bus tables' metadata (not created), an engine and a relay on it."""
    service = ServiceSettings(**database.settings_for(name), **settings)
    await db.ensure_schema(service)
    metadata = MetaData()
    _, _, bus_state = bus_tables(metadata)
    engine = db.create_engine(service)
    relay = OutboxRelay(
        engine=engine,
        outbox=metadata.tables["outbox"],
        bus_state=bus_state,
        settings=service,
        metrics=ServiceMetrics(name),
        watch=BrokerWatch(),
        client_id=name,
    )
    return metadata, engine, relay


async def test_every_writer_s_rows_are_pending_until_claimed_and_never_written_again(
    database: Database,
) -> None:
    """Rows inserted by a plain insert (the dead-letter path, the call-back handler), a
    set-wise insert (the bulk writers, the group committer) and ``Outbox.add`` are pending, in
    their own transaction only; the claim publishes them in id order and leaves each outbox
    row as it was written (PostgreSQL: the same row version)."""
    metadata, engine, relay = await _relay(database, "pending", outbox_batch_size=100)
    outbox = metadata.tables["outbox"]
    sent = _Sent()
    relay._send = sent  # type: ignore[method-assign]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with engine.begin() as conn:
            await conn.execute(outbox.insert().values(event_row(ticket(1))))
            await bulk.insert(conn, outbox, [event_row(ticket(n)) for n in (2, 3)])
            await Outbox(outbox).add(conn, ticket(4))
        async with engine.connect() as conn:  # rolled back: neither row stays
            await conn.begin()
            await conn.execute(outbox.insert(), [event_row(ticket(5))])
            await conn.rollback()
        written = await _ids(engine, "outbox")
        assert len(written) == 4 and await _ids(engine, PENDING_TABLE) == written
        versions = await _versions(engine, database.kind)

        assert await relay.publish_batch() == 4
        assert [r[0] for r in sent.rows] == written
        assert [r[3] for r in sent.rows] == [ticket(n).ticket_id for n in (1, 2, 3, 4)]
        assert await _ids(engine, PENDING_TABLE) == []
        assert await _versions(engine, database.kind) == versions
        assert await relay.publish_batch() == 0
    finally:
        await relay.close()
        await engine.dispose()


async def test_the_purge_reads_the_outbox_by_its_key_without_statistics(
    database: Database,
) -> None:
    """The purge's bound (the minutes' subquery) is unknown when it is planned: on an outbox
    never analysed PostgreSQL chose to read the whole table at every purge, once a minute, a
    table holding the retention window's days of events. Its transaction reads it by key."""
    if database.kind != "postgres":
        pytest.skip("the plans are PostgreSQL's")
    metadata, engine, relay = await _relay(database, "purge_plan")
    outbox = metadata.tables["outbox"]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = false)"))
            await bulk.insert(conn, outbox, [event_row(ticket(n)) for n in range(20_000)])
        purge, _ = relay.purge_statements(utcnow() - timedelta(days=7))

        async def plan(conn: Any) -> str:
            compiled = purge.compile(dialect=conn.dialect)
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
            rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", params)
            return "\n".join(row[0] for row in rows)

        async with engine.begin() as conn:
            assert "Seq Scan on outbox " in await plan(conn)  # what the planner picks alone
            await conn.rollback()
        async with engine.begin() as conn:
            await relay.purge_plan(conn)
            chosen = await plan(conn)
        assert "Seq Scan on outbox " not in chosen, chosen
        assert "outbox_pkey" in chosen, chosen
    finally:
        await relay.close()
        await engine.dispose()


async def _versions(engine: AsyncEngine, kind: str) -> list[Any]:
    """The outbox rows' physical versions on PostgreSQL (each row's creating transaction and
    place), their contents on SQLite."""
    columns = "xmin::text, ctid::text" if kind == "postgres" else "*"
    async with engine.connect() as conn:
        return list((await conn.execute(text(f"SELECT {columns} FROM outbox ORDER BY id"))).all())


def test_a_record_row_has_no_publication_column() -> None:
    row = record_row(encode(ticket(1)), event_id="e", event_type="t", topic=INTAKE_TOPIC)
    assert set(row) == {c.name for c in bus_tables(MetaData())[0].columns if c.name != "id"}


async def test_the_claim_commits_without_waiting_for_the_wal_flush(database: Database) -> None:
    """PostgreSQL: a claim only records that the broker has its records (lost with the server,
    its rows are pending again and sent again, as after a relay stopped before its commit), so
    its commit does not wait for the WAL flush; the connection's own setting is as it was
    after it, and the rows are gone from the pending table once it returns."""
    if database.kind != "postgres":
        pytest.skip("synchronous_commit is PostgreSQL's")
    metadata, engine, relay = await _relay(database, "claim_commit", outbox_batch_size=100)
    outbox = metadata.tables["outbox"]
    seen: list[str] = []

    async def send(rows: Any) -> None:
        assert relay._held is not None  # the claim's own connection, inside its transaction
        seen.append(await relay._held[1].fetchval("SHOW synchronous_commit"))

    relay._send = send  # type: ignore[method-assign]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await bulk.insert(conn, outbox, [event_row(ticket(n)) for n in (1, 2, 3)])
        assert await relay.publish_batch() == 3
        assert seen == ["off"]
        assert relay._held is not None
        assert await relay._held[1].fetchval("SHOW synchronous_commit") == "on"
        assert await _ids(engine, PENDING_TABLE) == []
    finally:
        await relay.close()
        await engine.dispose()


async def test_the_relay_vacuums_the_pending_table_as_it_claims(database: Database) -> None:
    """PostgreSQL: every claimed row leaves a dead entry at the left end of the pending table's
    key, where every claim and probe starts; without a vacuum (autovacuum off, or seldom for a
    table of a few live rows) each walks them all. The relay vacuums the table after every so
    many rows claimed: the entries are gone, and what is pending is untouched."""
    if database.kind != "postgres":
        pytest.skip("the vacuum is PostgreSQL's")
    metadata, engine, relay = await _relay(database, "pending_vacuum", outbox_batch_size=10)
    outbox = metadata.tables["outbox"]
    relay._send = _Sent()  # type: ignore[method-assign]
    relay._vacuum_every = 25

    async def vacuums() -> int:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            count = await conn.scalar(
                text(
                    "SELECT vacuum_count FROM pg_stat_user_tables "
                    "WHERE relname = :t AND schemaname = current_schema()"
                ),
                {"t": PENDING_TABLE},
            )
            await conn.rollback()
        return int(count or 0)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                text(f"ALTER TABLE {PENDING_TABLE} SET (autovacuum_enabled = false)")
            )
            await bulk.insert(conn, outbox, [event_row(ticket(n)) for n in range(35)])
        assert [await relay.publish_batch() for _ in range(2)] == [10, 10]
        assert await vacuums() == 0
        assert await relay.publish_batch() == 10  # 30 claimed: vacuumed once
        assert await vacuums() == 1
        assert len(await _ids(engine, PENDING_TABLE)) == 5
        assert await relay.publish_batch() == 5
        assert await vacuums() == 1
    finally:
        await relay.close()
        await engine.dispose()
