"""Cell keys sort by period, so the cells the live apply moves sit together in the key index;
migration 0012 renames the cells a database already holds to exactly the keys the apply
computes, and its downgrade gives the old keys back."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import date
from typing import Any

from alembic import command
from sqlalchemy import insert, select

from fengqiao import registry
from services.evaluation import cells
from services.evaluation.models import DIMENSIONS, cells_table
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.migrate import alembic_config, upgrade_async
from tests.support import Database

BEFORE, AFTER = "0011_header_block", "0012_period_keys"


def old_key(grain: str, start: date, dims: tuple[str, ...]) -> str:
    """A key as revisions before 0012 computed it: the digest alone."""
    text = "|".join((grain, start.isoformat(), *dims))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def places() -> list[tuple[str, date, tuple[str, ...]]]:
    """Cells of every grain on days over two years, in several towns and departments."""
    found: dict[tuple[str, date, tuple[str, ...]], None] = {}  # the coarse grains share cells
    for n, day in enumerate([date(2025, 1, 31), date(2025, 12, 1), date(2026, 6, 15)]):
        for town in ("310101001", "310104002"):
            dims = (
                "appeal",
                f"DEPT-{n:03d}",
                "town",
                town[:6],
                town,
                town + "001",
                town + "001001",
                "hotline-12345-phone",
                "01",
                "0101",
                "direct",
                "",
            )
            for grain in cells.GRAINS:
                start = cells.period_start(grain.name, day)
                found[grain.name, start, grain.project((*dims, ""))] = None
    return list(found)


def test_keys_sort_by_period_whatever_the_place() -> None:
    keyed = [(cells.cell_key(*place), place[1]) for place in places()]
    assert sorted(keyed) == sorted(keyed, key=lambda k: (k[1], k[0]))
    assert len({key for key, _ in keyed}) == len(keyed)
    assert all(len(key) <= cells_table.c.cell_key.type.length for key, _ in keyed)


async def test_the_migration_renames_stored_cells_to_the_apply_s_keys_and_back(
    database: Database,
) -> None:
    settings = EvaluationSettings(**database.settings_for("evaluation_keys"))
    migrations = registry.SERVICES["evaluation"].migrations
    await upgrade_async(migrations, settings, BEFORE)
    config = alembic_config(migrations, settings)
    engine = db.create_engine(settings)
    stored = places()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(cells_table),
                [
                    {"cell_key": old_key(*place), "grain": place[0], "period_start": place[1]}
                    | dict(zip(DIMENSIONS, place[2], strict=True))
                    | {"received": 1}
                    for place in stored
                ],
            )

        async def keys() -> dict[str, tuple[str, date, tuple[str, ...]]]:
            columns = [cells_table.c[name] for name in DIMENSIONS]
            query = select(
                cells_table.c.cell_key, cells_table.c.grain, cells_table.c.period_start, *columns
            )
            async with engine.connect() as conn:
                rows: Any = (await conn.execute(query)).all()
            return {key: (grain, start, tuple(dims)) for key, grain, start, *dims in rows}

        await asyncio.to_thread(command.upgrade, config, AFTER)
        await engine.dispose()  # fresh connections: no statement prepared before the upgrade
        assert await keys() == {cells.cell_key(*place): place for place in stored}
        await asyncio.to_thread(command.downgrade, config, BEFORE)
        await engine.dispose()
        assert await keys() == {old_key(*place): place for place in stored}
    finally:
        await engine.dispose()
