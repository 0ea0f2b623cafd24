"""The keys the live apply probes are compared as bytes on PostgreSQL (``COLLATE "C"``), whatever
the database's own collation, and ``eval_cells`` is vacuumed and analysed by its own thresholds:
the migration gives what the model declares, and takes it back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from fengqiao import registry
from services.evaluation.models import CELLS_AUTOVACUUM, metadata
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.db import Key
from shared.migrate import alembic_config
from tests.support import Database

pytestmark = pytest.mark.postgres

# every column of evaluation's own tables and its collation, where it has a non-default one
COLLATIONS = text(
    "SELECT c.relname, a.attname, l.collname FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_collation l ON l.oid = a.attcollation "
    "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
    "AND a.attnum > 0 AND l.collname <> 'default'"
)
OPTIONS = text("SELECT reloptions FROM pg_class WHERE oid = 'eval_cells'::regclass")


async def _state(engine: Any) -> tuple[set[tuple[str, str]], list[str]]:
    async with engine.connect() as conn:
        collated = {
            (t, c) for t, c, collation in await conn.execute(COLLATIONS) if collation == "C"
        }
        options = await conn.scalar(OPTIONS)
    return collated, options


async def test_the_apply_s_keys_are_compared_as_bytes_and_the_cells_vacuumed_by_row_counts(
    database: Database,
) -> None:
    if database.kind != "postgres":
        pytest.skip("collations and autovacuum settings are PostgreSQL's")
    settings = EvaluationSettings(**database.settings_for("evaluation_collate"))
    await registry.upgrade_async("evaluation", settings)
    engine = db.create_engine(settings)
    declared = {
        (table.name, column.name)
        for table in metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, Key)
    }
    tuned = ["fillfactor=50", *(f"{name}={value}" for name, value in CELLS_AUTOVACUUM.items())]
    try:
        assert ("eval_cells", "cell_key") in declared and len(declared) == 8
        assert await _state(engine) == (declared, tuned)
        # and back: the database's default collation, the default thresholds
        config = alembic_config(registry.SERVICES["evaluation"].migrations, settings)
        await asyncio.to_thread(command.downgrade, config, "0009_fill50")
        assert await _state(engine) == (set(), ["fillfactor=50"])
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await _state(engine) == (declared, tuned)
    finally:
        await engine.dispose()
