"""A routed ticket's dispatch enters as few indexes as its reads need (migration
0007_fewer_dispatch_entries): none repeats the leading columns of another, and the whistle index
holds the summonses alone. The migrated schema is what the model declares, and the downgrade
brings the indexes of before back."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from sqlalchemy import inspect, text

from fengqiao import registry
from services.dispatch.models import Dispatch
from services.dispatch.settings import DispatchSettings
from shared import db
from shared.migrate import alembic_config
from tests.support import Database


async def _indexes(engine: Any) -> dict[str, tuple[str, ...]]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_indexes("dispatches"))
    return {i["name"]: tuple(i["column_names"]) for i in found}


async def _partial(engine: Any, database: Database) -> dict[str, str]:
    """Each index of ``dispatches`` that holds some rows only: its name and condition."""
    if database.kind == "postgres":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'dispatches'"
        query += " AND schemaname = current_schema()"
    else:
        query = (
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'dispatches'"
        )
    async with engine.connect() as conn:
        rows = (await conn.execute(text(query))).all()
    return {
        name: sql.split(" WHERE ", 1)[1]
        for name, sql in rows
        if sql is not None and " WHERE " in sql
    }


async def test_a_dispatch_enters_no_index_its_reads_do_not_need(database: Database) -> None:
    settings = DispatchSettings(**database.settings_for("dispatch_indexes"))
    await registry.upgrade_async("dispatch", settings)
    engine = db.create_engine(settings)
    try:
        declared = {
            i.name: tuple(c.name for c in i.columns)
            for i in Dispatch.__table__.indexes  # type: ignore[attr-defined]
        }
        indexes = await _indexes(engine)
        assert indexes == declared
        for name, columns in indexes.items():
            for other, more in indexes.items():
                assert other == name or more[: len(columns)] != columns, (name, other)
        partial = await _partial(engine, database)
        assert list(partial) == ["ix_dispatches_whistle_id"]
        assert "whistle_id IS NOT NULL" in partial["ix_dispatches_whistle_id"]
        # and back: the department's own index, every dispatch in the whistle index
        config = alembic_config(registry.SERVICES["dispatch"].migrations, settings)
        await asyncio.to_thread(command.downgrade, config, "dispatch_outbox_pending")
        before = await _indexes(engine)
        assert before["ix_dispatches_department_code"] == ("department_code",)
        assert not await _partial(engine, database)
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await _indexes(engine) == declared
    finally:
        await engine.dispose()
