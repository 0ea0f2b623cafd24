"""The indexes of ``eval_cells``: the migrations build what the model declares (the rebuild drops
and builds them again from the model), none holds a counter (a move that changes only counters
can then be a heap-only update on PostgreSQL), and a read names its grain so that the partial
department and town indexes serve it even from a prepared statement's generic plan."""

from __future__ import annotations

import asyncio
import re
from datetime import date
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from sqlalchemy import inspect, select, text

from fengqiao import registry
from services.evaluation import cells
from services.evaluation.models import (
    CELL_COLUMNS,
    DEPARTMENT_INDEXED,
    DIMENSIONS,
    TOWN_INDEXED,
    cells_table,
)
from services.evaluation.periods import period_of
from services.evaluation.queries import Filters, grain_for, sums
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.migrate import alembic_config
from tests.support import Database


async def _migrated(database: Database, name: str) -> Any:
    settings = EvaluationSettings(**database.settings_for(name))
    await registry.upgrade_async("evaluation", settings)
    return db.create_engine(settings)


async def _indexes(engine: Any) -> dict[str, list[str]]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_indexes("eval_cells"))
    return {i["name"]: list(i["column_names"]) for i in found}


async def test_the_migrated_indexes_are_the_models_and_hold_no_counter(
    database: Database,
) -> None:
    engine = await _migrated(database, "evaluation_indexes")
    try:
        declared = {i.name: [c.name for c in i.columns] for i in cells_table.indexes}
        assert await _indexes(engine) == declared
        counted = set(CELL_COLUMNS)
        for index in cells_table.indexes:
            where = index.dialect_options["postgresql"]["where"]
            assert not counted & {c.name for c in index.columns}, index.name
            assert not counted & set(re.findall(r"\w+", "" if where is None else str(where)))
        # and back: the six indexes of before (and the key), the hot-spot ones holding ``received``
        settings = EvaluationSettings(**database.settings_for("evaluation_indexes"))
        config = alembic_config(registry.SERVICES["evaluation"].migrations, settings)
        await asyncio.to_thread(command.downgrade, config, "0007_week")
        before = await _indexes(engine)
        assert len(before) == 6 and "received" in before["ix_eval_cells_places"]
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await _indexes(engine) == declared
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("predicate", "dimension"),
    [(DEPARTMENT_INDEXED, "department_code"), (TOWN_INDEXED, "town_code")],
)
def test_the_partial_indexes_name_grains_that_keep_their_dimension(
    predicate: str, dimension: str
) -> None:
    named = re.findall(r"'(\w+)'", predicate)
    assert named
    for grain in named:
        assert dimension in cells.BY_NAME[grain].dimensions, grain


@pytest.mark.postgres
async def test_a_department_read_uses_its_partial_index_in_a_generic_plan(
    database: Database,
) -> None:
    if database.kind != "postgres":
        pytest.skip("plans are PostgreSQL's")
    engine = await _migrated(database, "evaluation_plans")
    day = period_of("day", date(2026, 5, 6))
    filters = Filters(department="DEPT-001")
    assert grain_for(day, filters, None) == "day_coarse"
    statements: list[tuple[str, Any]] = []

    @sqlalchemy.event.listens_for(engine.sync_engine, "before_cursor_execute")
    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    # a day's coarse cells of many departments and towns, so that the department's index is the
    # cheapest way to one department's
    rows = [
        {
            "cell_key": f"k{n}",
            "grain": "day_coarse",
            "period_start": day.start,
            **dict.fromkeys(DIMENSIONS, ""),
            "kind": "appeal",
            "department_code": f"DEPT-{n % 200:03d}",
            "town_code": f"T{n % 10}",
        }
        for n in range(4000)
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(cells_table.insert(), rows)
            await conn.execute(text("ANALYZE eval_cells"))
        statements.clear()
        await sums(engine, period=day, filters=filters)
        ((statement, parameters),) = statements
        values = ", ".join(
            str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"
            for v in parameters
        )
        async with engine.connect() as conn:
            await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
            await conn.execute(text("SET enable_seqscan = off"))
            await conn.exec_driver_sql(f"PREPARE department_read AS {statement}")
            plan = "\n".join(
                row[0]
                for row in await conn.exec_driver_sql(f"EXPLAIN EXECUTE department_read({values})")
            )
            await conn.exec_driver_sql("DEALLOCATE department_read")
    finally:
        await engine.dispose()
    assert "ix_eval_cells_department" in plan, plan


async def test_received_moves_off_the_hot_spot_grains_are_heap_only(database: Database) -> None:
    """``spot_received`` is ``received`` on the hot-spot grains and 0 elsewhere; on PostgreSQL a
    move of ``received`` on any other grain changes no indexed value, so it is heap-only."""
    engine = await _migrated(database, "evaluation_heap_only")
    blank = dict.fromkeys(DIMENSIONS, "")
    rows = [
        {"cell_key": grain, "grain": grain, "period_start": date(2026, 5, 1), **blank}
        for grain in ("day_coarse", "month_service", "month_place", "month_category")
    ]
    received = cells_table.c.received
    try:
        async with engine.begin() as conn:
            await conn.execute(cells_table.insert(), [{**r, "received": 2} for r in rows])
        async with engine.begin() as conn:
            moved = await conn.execute(cells_table.update().values(received=received + 1))
            assert moved.rowcount == 4
            if database.kind == "postgres":
                hot = await conn.scalar(
                    text("SELECT pg_stat_get_xact_tuples_hot_updated('eval_cells'::regclass)")
                )
                assert hot == 2  # day_coarse and month_service; the hot-spot grains' index moves
        async with engine.connect() as conn:
            spots = dict(
                (await conn.execute(select(cells_table.c.grain, cells_table.c.spot_received))).all()
            )
    finally:
        await engine.dispose()
    assert spots == {"day_coarse": 0, "month_service": 0, "month_place": 3, "month_category": 3}


@pytest.mark.postgres
async def test_cells_created_together_and_moved_together_are_moved_heap_only(
    database: Database,
) -> None:
    """A fetch creates cells side by side on the same pages, and a later fetch of the same
    tickets moves them all in one statement: each page keeps room for every one of its cells'
    new versions (``fillfactor`` 50), so none of those moves touches an index."""
    if database.kind != "postgres":
        pytest.skip("heap-only updates and fillfactor are PostgreSQL's")
    engine = await _migrated(database, "evaluation_fill")
    blank = dict.fromkeys(DIMENSIONS, "")
    counted = dict.fromkeys(CELL_COLUMNS, 1)
    rows = [
        {
            "cell_key": f"k{n:04d}",
            "grain": "day",
            "period_start": date(2026, 5, 1),
            **blank,
            "grid_code": f"G{n:04d}",
            **counted,
        }
        for n in range(400)
    ]
    received = cells_table.c.received
    try:
        async with engine.begin() as conn:
            await conn.execute(cells_table.insert(), rows)
        async with engine.begin() as conn:
            moved = await conn.execute(cells_table.update().values(received=received + 1))
            hot = await conn.scalar(
                text("SELECT pg_stat_get_xact_tuples_hot_updated('eval_cells'::regclass)")
            )
            fill = await conn.scalar(
                text("SELECT reloptions FROM pg_class WHERE oid = 'eval_cells'::regclass")
            )
    finally:
        await engine.dispose()
    assert fill[0] == "fillfactor=50"
    assert moved.rowcount == len(rows)
    assert hot == len(rows)
