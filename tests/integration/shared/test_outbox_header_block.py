"""Every service's migration to ``header_block``: rows written before it keep their JSON headers
and read as they did, rows written after it hold a block, and the downgrade writes each block
back as JSON before dropping the column."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from sqlalchemy import MetaData, inspect, select

from fengqiao import registry
from shared import bulk, db
from shared.events import INTAKE_TOPIC, encode
from shared.events.base import Record
from shared.migrate import alembic_config
from shared.outbox import bus_tables, json_headers, record_row, row_headers
from shared.settings import ServiceSettings
from tests.integration.shared.test_bus import ticket
from tests.support import Database

# each service's revision before the column
BEFORE = {
    "intake": "intake_audit_trail",
    "dispatch": "dispatch_audit_trail",
    "mediation": "mediation_audit_trail",
    "evaluation": "0010_collate",
}


def _record(n: int) -> Record:
    return encode(ticket(n))


def _row(record: Record, n: int) -> dict[str, Any]:
    return record_row(
        record, event_id=f"e{n}", event_type="intake.ticket.received", topic=INTAKE_TOPIC
    )


@pytest.mark.parametrize("service", sorted(BEFORE))
async def test_the_migration_keeps_earlier_rows_readable_and_its_downgrade_writes_json_back(
    database: Database, service: str
) -> None:
    settings = ServiceSettings(**database.settings_for(f"{service}_hb"))
    config = alembic_config(registry.SERVICES[service].migrations, settings)
    await db.ensure_schema(settings)
    await asyncio.to_thread(command.upgrade, config, BEFORE[service])
    engine = db.create_engine(settings)
    before, after = MetaData(), MetaData()
    old_outbox, current = bus_tables(before)[0], bus_tables(after)[0]
    old_outbox._columns.remove(old_outbox.c.header_block)  # the table as it was
    try:
        first, second = _record(1), _record(2)
        earlier = {**_row(first, 1), "headers": json_headers(first.headers)}
        del earlier["header_block"]
        async with engine.begin() as conn:
            await bulk.insert(conn, old_outbox, [earlier])
        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.begin() as conn:
            await bulk.insert(conn, current, [_row(second, 2)])
        query = select(current.c.headers, current.c.header_block).order_by(current.c.id)
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        assert rows[0].header_block is None and rows[1].header_block is not None
        stored = [row_headers(r.headers, r.header_block) for r in rows]
        assert stored == [first.headers, second.headers]

        await asyncio.to_thread(command.downgrade, config, BEFORE[service])
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: [c["name"] for c in inspect(sync).get_columns("outbox")]
            )
            back = (
                await conn.execute(select(old_outbox.c.headers).order_by(old_outbox.c.id))
            ).all()
        assert "header_block" not in columns
        assert [r.headers for r in back] == [json_headers(h) for h in stored]
        await asyncio.to_thread(command.upgrade, config, "head")
    finally:
        await engine.dispose()
