"""Intake's ticket keys — id, channel and external id, citizen hash, grid, address key — are
compared as bytes on PostgreSQL (``COLLATE "C"``) whatever the database's own collation: the
migration gives what the model declares, and takes it back; the look-ups that probe them still
find their tickets."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from sqlalchemy import text

from fengqiao import registry
from services.intake.models import Ticket
from services.intake.settings import IntakeSettings
from shared import db
from shared.db import Key
from shared.migrate import alembic_config
from tests.support import Database

pytestmark = pytest.mark.postgres

# every column of the tickets table with a non-default collation, and that collation
COLLATED = text(
    "SELECT a.attname, l.collname FROM pg_attribute a "
    "JOIN pg_collation l ON l.oid = a.attcollation "
    "WHERE a.attrelid = 'tickets'::regclass AND a.attnum > 0 AND l.collname <> 'default'"
)


async def test_the_ticket_keys_are_compared_as_bytes_and_the_migration_takes_it_back(
    database: Database,
) -> None:
    if database.kind != "postgres":
        pytest.skip("collations are PostgreSQL's; SQLite compares bytes already")
    settings = IntakeSettings(**database.settings_for("intake_collate"))
    await registry.upgrade_async("intake", settings)
    engine = db.create_engine(settings)
    declared = {
        (column.name, "C")
        for column in Ticket.__table__.columns  # type: ignore[attr-defined]
        if isinstance(column.type, Key)
    }

    async def collated() -> set[tuple[str, str]]:
        async with engine.connect() as conn:
            return {(name, collation) for name, collation in await conn.execute(COLLATED)}

    try:
        assert {name for name, _ in declared} == {
            "ticket_id",
            "channel",
            "external_id",
            "citizen_hash",
            "grid_code",
            "address_key",
        }
        assert await collated() == declared
        config = alembic_config(registry.SERVICES["intake"].migrations, settings)
        await asyncio.to_thread(command.downgrade, config, "intake_outbox_bundles")
        assert await collated() == set()
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await collated() == declared
        # a key's index still serves an equality probe (the collation of the column wins over
        # the parameter's default one)
        async with engine.connect() as conn:
            plan = "\n".join(
                row[0]
                for row in await conn.execute(
                    text(
                        "EXPLAIN SELECT ticket_id FROM tickets WHERE citizen_hash = "
                        "CAST(:v AS varchar) ORDER BY citizen_hash DESC, received_at DESC LIMIT 5"
                    ),
                    {"v": "a" * 64},
                )
            )
        assert "ix_tickets_citizen_recent" in plan
    finally:
        await engine.dispose()
