"""On PostgreSQL intake's tickets keep room on each page for their status updates (heap-only
updates: no entry in the table's seven indexes); the downgrade takes the setting away. SQLite
has no such setting: both ways leave it as it was."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import text

from fengqiao import registry
from shared import db
from shared.migrate import alembic_config
from shared.settings import ServiceSettings
from tests.support import Database

BEFORE = "intake_event_id_not_unique"


async def _options(settings: ServiceSettings) -> list[str] | None:
    engine = db.create_engine(settings)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name != "postgresql":
                return None
            found = await conn.execute(
                text("SELECT reloptions FROM pg_class WHERE oid = 'tickets'::regclass")
            )
            return list(found.scalar_one() or [])
    finally:
        await engine.dispose()


async def test_tickets_keep_room_for_their_updates_and_the_downgrade_resets_it(
    database: Database,
) -> None:
    settings = ServiceSettings(**database.settings_for("intake_ff"))
    await db.ensure_schema(settings)
    config = alembic_config(registry.SERVICES["intake"].migrations, settings)
    await asyncio.to_thread(command.upgrade, config, "head")
    postgres = database.kind == "postgres"
    assert await _options(settings) == (["fillfactor=50"] if postgres else None)
    await asyncio.to_thread(command.downgrade, config, BEFORE)
    assert await _options(settings) == ([] if postgres else None)
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _options(settings) == (["fillfactor=50"] if postgres else None)
