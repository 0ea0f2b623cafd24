"""Migration 0014: the cell counters as INTEGER (``handling_centidays`` BIGINT) on PostgreSQL,
the department and town indexes without the dropped grain ``month``, the facts' pages half
full; its downgrade gives the wide layout back, and the cells a database holds survive both
ways, value for value."""

from __future__ import annotations

import asyncio
import re
from datetime import date
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert, select, text

from fengqiao import registry
from services.evaluation import cells
from services.evaluation.metrics_registry import BUCKETS, COUNTERS
from services.evaluation.models import (
    DEPARTMENT_INDEXED,
    DIMENSIONS,
    TOWN_INDEXED,
    WIDE_COUNTERS,
    cells_table,
)
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.migrate import alembic_config, upgrade_async
from tests.support import Database

BEFORE, AFTER = "0013_fewer_grains", "0014_narrow_cells"
FACTS = ("ticket_facts", "dispatch_facts", "case_facts", "eval_contributions")

# Cells as the apply leaves them: a hot-spot grain's (``spot_received`` computed from
# ``received``), counters near INTEGER's top, a handling-time sum past it, a bucket.
STORED = [
    {
        "cell_key": f"2026060{n}key{n}",
        "grain": grain,
        "period_start": date(2026, 6, n),
        **dict.fromkeys(DIMENSIONS, ""),
        "kind": "appeal",
        "department_code": f"DEPT-{n:03d}",
        "town_code": "310101001",
        "received": 2**31 - n,
        "completed": n,
        "handling_centidays": 3 * 2**31 + n,
        "h_0025": n,
        "h_over": 7,
    }
    for n, grain in enumerate(("day", "month_place", "month_category", "day_coarse"), start=1)
]


async def _cells(engine: Any) -> list[dict[str, Any]]:
    query = select(*cells_table.columns).order_by(cells_table.c.cell_key)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def _postgres_layout(engine: Any) -> list[tuple[str, str]]:
    """(column, type) of ``eval_cells`` in the order its rows store them."""
    query = text(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'eval_cells'::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum"
    )
    async with engine.connect() as conn:
        return [(name, kind) for name, kind in (await conn.execute(query)).all()]


async def _predicates(engine: Any, postgres: bool) -> dict[str, str]:
    query = (
        text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'eval_cells'")
        if postgres
        else text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    )
    async with engine.connect() as conn:
        found = dict((await conn.execute(query)).all())
    return {n: found[n] for n in ("ix_eval_cells_department", "ix_eval_cells_town")}


def _grains(definition: str) -> set[str]:
    return set(re.findall(r"'(\w+)'", definition.split("WHERE", 1)[1]))


async def _fillfactors(engine: Any) -> dict[str, Any]:
    query = text(
        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:names)"
        " AND relnamespace = current_schema()::regnamespace"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query, {"names": list(FACTS)})).all()
    return {name: tuple(options) if options else None for name, options in rows}


async def test_the_narrow_layout_and_back_keep_every_cell(database: Database) -> None:
    postgres = database.kind == "postgres"
    settings = EvaluationSettings(**database.settings_for("evaluation_narrow"))
    migrations = registry.SERVICES["evaluation"].migrations
    await upgrade_async(migrations, settings, BEFORE)
    config = alembic_config(migrations, settings)
    engine = db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(cells_table), STORED)
        stored = await _cells(engine)
        assert [c["spot_received"] for c in stored] == [0, 2**31 - 2, 2**31 - 3, 0]

        await asyncio.to_thread(command.upgrade, config, AFTER)
        await engine.dispose()  # fresh connections: no statement prepared before the upgrade
        assert await _cells(engine) == stored
        predicates = await _predicates(engine, postgres)
        assert _grains(predicates["ix_eval_cells_department"]) == {"day", "day_coarse"}
        assert _grains(predicates["ix_eval_cells_town"]) == {"day", "day_coarse", "month_place"}
        if postgres:
            layout = await _postgres_layout(engine)
            # the model's columns, in the model's order, of the model's types
            assert [name for name, _ in layout] == [c.name for c in cells_table.columns]
            types = dict(layout)
            assert {n for n in COUNTERS if types[n] == "bigint"} == WIDE_COUNTERS
            assert {types[n] for n in COUNTERS if n not in WIDE_COUNTERS} == {"integer"}
            assert {types[n] for n in (*BUCKETS, "spot_received")} == {"integer"}
            assert set((await _fillfactors(engine)).values()) == {("fillfactor=50",)}

        await asyncio.to_thread(command.downgrade, config, BEFORE)
        await engine.dispose()
        assert await _cells(engine) == stored
        predicates = await _predicates(engine, postgres)
        assert "month" in _grains(predicates["ix_eval_cells_department"])
        assert "month" in _grains(predicates["ix_eval_cells_town"])
        if postgres:
            layout = await _postgres_layout(engine)
            assert layout[:3] == [
                ("cell_key", "character varying(40)"),
                ("grain", "character varying(16)"),
                ("period_start", "date"),
            ]
            assert {kind for name, kind in layout if name in COUNTERS} == {"bigint"}
            assert dict(layout)["spot_received"] == "bigint"
            assert set((await _fillfactors(engine)).values()) == {None}

        await asyncio.to_thread(command.upgrade, config, "head")
        await engine.dispose()
        assert await _cells(engine) == stored
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_counter_past_integer_stops_the_migration_naming_it(database: Database) -> None:
    if database.kind != "postgres":
        pytest.skip("SQLite's integers are not narrowed")
    settings = EvaluationSettings(**database.settings_for("evaluation_narrow_wide"))
    migrations = registry.SERVICES["evaluation"].migrations
    await upgrade_async(migrations, settings, BEFORE)
    engine = db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(cells_table), STORED[:1])
            # the model's INTEGER would refuse the value the wide column holds: written as text
            await conn.execute(text(f"UPDATE eval_cells SET dispatches = {2**31}"))
        config = alembic_config(migrations, settings)
        with pytest.raises(RuntimeError, match=r"outside INTEGER's range.*: dispatches;"):
            await asyncio.to_thread(command.upgrade, config, AFTER)
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            kept = (await conn.execute(select(cells_table.c.dispatches))).scalar()
        assert (version, kept) == (BEFORE, 2**31)
    finally:
        await engine.dispose()


def test_the_indexed_grains_are_all_written() -> None:
    for predicate in (DEPARTMENT_INDEXED, TOWN_INDEXED):
        named = set(re.findall(r"'(\w+)'", predicate))
        assert named and not named & set(cells.DROPPED), predicate
        assert named <= set(cells.BY_NAME), predicate
