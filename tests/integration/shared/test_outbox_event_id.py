"""``outbox.event_id`` and ``audit_trail.event_id`` carry no unique constraint (nothing reads
either table by event id; ``shared.outbox.drop_event_id_unique``): every service's migrated
schema has none, as its model declares, and the downgrade brings them back."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, UniqueConstraint, func, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from fengqiao import registry
from shared import db
from shared.events import INTAKE_TOPIC, encode
from shared.migrate import alembic_config
from shared.outbox import (
    AUDIT_TABLE,
    PENDING_TABLE,
    PUBLISHED_TABLE,
    audit_row,
    bus_tables,
    record_row,
)
from shared.settings import ServiceSettings
from tests.integration.shared.test_bus import ticket
from tests.support import Database

# each service's revision before the constraints were dropped
BEFORE = {
    "intake": "intake_header_block",
    "dispatch": "dispatch_header_block",
    "mediation": "mediation_header_block",
    "evaluation": "0014_narrow_cells",
}
BUS_TABLES = ("outbox", "inbox", "bus_state", AUDIT_TABLE, PENDING_TABLE, PUBLISHED_TABLE)


def _model(service: str) -> MetaData:
    package = registry.SERVICES[service].migrations.rsplit(".", 1)[0]
    metadata: MetaData = importlib.import_module(f"{package}.models").metadata
    return metadata


def _unique_columns(sync: Connection, table: str) -> set[tuple[str, ...]]:
    """The column lists a table holds unique, by constraint or by index (the primary key
    aside), as the database reports them."""
    found = inspect(sync)
    uniques = {tuple(u["column_names"]) for u in found.get_unique_constraints(table)}
    indexed = {tuple(i["column_names"]) for i in found.get_indexes(table) if i["unique"]}
    return uniques | indexed


def _declared_unique(table: Table) -> set[tuple[str, ...]]:
    constraints = {
        tuple(c.name for c in u.columns)
        for u in table.constraints
        if isinstance(u, UniqueConstraint)
    }
    indexes = {tuple(c.name for c in i.columns) for i in table.indexes if i.unique}
    return constraints | indexes


def _table_of(difference: Any) -> str:
    """The table one of ``compare_metadata``'s differences is about."""
    if isinstance(difference, list):  # a column's modifications
        return str(difference[0][2])
    kind, subject = difference[0], difference[1]
    if kind.endswith("_table"):
        return str(subject.name)
    if kind.endswith("_column"):
        return str(difference[2])
    return str(subject.table.name)  # an index or a constraint


def _rows(event_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    event = ticket(1)
    outbox = record_row(
        encode(event), event_id=event_id, event_type=event.event_type, topic=INTAKE_TOPIC
    )
    audit = {**audit_row(event, None, now=event.occurred_at), "event_id": event_id}
    return outbox, audit


async def _write_twice(engine: AsyncEngine, event_id: str) -> None:
    """The same event id written twice to both tables, in two transactions."""
    tables = bus_tables(MetaData())[0].metadata.tables
    outbox, audit = _rows(event_id)
    for _ in range(2):
        async with engine.begin() as conn:
            await conn.execute(tables["outbox"].insert(), [outbox])
            await conn.execute(tables[AUDIT_TABLE].insert(), [audit])


@pytest.mark.parametrize("service", sorted(BEFORE))
async def test_the_bus_tables_migrate_to_what_the_model_declares(
    database: Database, service: str
) -> None:
    """Alembic's comparison (which cannot see SQLite's unnamed unique constraints) and the
    unique column lists of each bus table, against the model."""
    settings = ServiceSettings(**database.settings_for(f"{service}_ev"))
    await db.ensure_schema(settings)
    config = alembic_config(registry.SERVICES[service].migrations, settings)
    await asyncio.to_thread(command.upgrade, config, "head")
    model = _model(service)
    engine = db.create_engine(settings)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), model
                )
            )
            unique = {name: await conn.run_sync(_unique_columns, name) for name in BUS_TABLES}
    finally:
        await engine.dispose()
    assert [d for d in diff if _table_of(d) in BUS_TABLES] == []
    assert unique == {name: _declared_unique(model.tables[name]) for name in BUS_TABLES}
    assert unique["outbox"] == unique[AUDIT_TABLE] == set()


@pytest.mark.parametrize("service", sorted(BEFORE))
async def test_an_event_id_is_not_held_unique_and_the_downgrade_brings_the_constraint_back(
    database: Database, service: str
) -> None:
    settings = ServiceSettings(**database.settings_for(f"{service}_eu"))
    await db.ensure_schema(settings)
    config = alembic_config(registry.SERVICES[service].migrations, settings)
    await asyncio.to_thread(command.upgrade, config, "head")
    engine = db.create_engine(settings)
    tables = bus_tables(MetaData())[0].metadata.tables
    try:
        await _write_twice(engine, "twice")
        async with engine.connect() as conn:
            for name in ("outbox", AUDIT_TABLE):
                count = select(func.count()).where(tables[name].c.event_id == "twice")
                assert (await conn.execute(count)).scalar_one() == 2

            # the rows a downgrade would refuse go first
            for name in ("outbox", AUDIT_TABLE):
                await conn.execute(tables[name].delete())
            await conn.commit()
        await asyncio.to_thread(command.downgrade, config, BEFORE[service])
        async with engine.connect() as conn:
            for name in ("outbox", AUDIT_TABLE):
                assert await conn.run_sync(_unique_columns, name) == {("event_id",)}
        with pytest.raises(IntegrityError):
            await _write_twice(engine, str(uuid.uuid4()))

        # and up again, over the rows written meanwhile
        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.connect() as conn:
            for name in ("outbox", AUDIT_TABLE):
                assert await conn.run_sync(_unique_columns, name) == set()
                rows = select(func.count()).select_from(tables[name])
                assert (await conn.execute(rows)).scalar_one() == 1
        await _write_twice(engine, "again")
    finally:
        await engine.dispose()
