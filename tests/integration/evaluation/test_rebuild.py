"""``fengqiao evaluation rebuild``: the projections rebuilt from the topics equal the live ones,
row for row, after the committee fixture went through the real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

from alembic import command
from sqlalchemy import delete, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from fengqiao import registry
from services.evaluation import cells
from services.evaluation.models import CELL_COLUMNS, DIMENSIONS, cells_table
from services.evaluation.rebuild import TABLES, rebuild
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.events.base import Event
from shared.migrate import alembic_config, upgrade_async
from tests.integration.evaluation.committee_fixture import committee_events
from tests.integration.evaluation.support import EvaluationEnv
from tests.support import bus_settings, wait_until


async def dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with engine.connect() as conn:
        for table in TABLES:
            rows = (await conn.execute(select(table))).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


async def index_names(engine: AsyncEngine) -> dict[str, set[str | None]]:
    def names(conn: Any) -> dict[str, set[str | None]]:
        found = inspect(conn)
        return {t.name: {i["name"] for i in found.get_indexes(t.name)} for t in TABLES}

    async with engine.connect() as conn:
        return await conn.run_sync(names)


async def publish_all(env: EvaluationEnv, events: Sequence[Event]) -> None:
    for event in events:
        await env.publish(event.topic, event)

    async def all_consumed() -> bool:
        for event in events:
            if not await env.consumed(event):
                return False
        return True

    await wait_until(all_consumed, timeout=60, what="evaluation to consume the fixture")


async def test_rebuilt_equals_live_row_for_row(env: EvaluationEnv, broker: Any) -> None:
    prefix = env.ticket_id()[2:8].upper()
    await publish_all(env, committee_events(prefix))
    live = await dump(env.runtime.engine)
    assert live["ticket_facts"] and live["eval_cells"] and live["eval_contributions"]
    assert live["case_facts"] and live["dispatch_facts"]

    # Rebuild into a fresh database of the same kind, from the same topics.
    database = env.database
    values = {
        **bus_settings(broker.bootstrap, env.settings.kafka_topic_prefix),
        **database.settings_for("evaluation_rebuilt"),
    }
    settings = EvaluationSettings(**values)
    await registry.upgrade_async("evaluation", settings)
    stages: list[str] = []
    report = await rebuild(settings, progress=lambda stage, done, total: stages.append(stage))
    assert {"read", "fold"} <= set(stages)
    assert report.events == len(live["eval_ledger"]) and report.skipped == 0
    engine = db.create_engine(settings)
    try:
        rebuilt = await dump(engine)
        for name, rows in live.items():
            assert rebuilt[name] == rows, name
        # the indexes dropped for the load are built again
        assert await index_names(engine) == {t.name: {i.name for i in t.indexes} for t in TABLES}
        # Refolded from the kept ledger alone (what an upgrade that empties the cells asks for):
        # the same rows again.
        async with engine.begin() as conn:
            await conn.execute(delete(cells_table))
        again = await rebuild(settings, engine=engine, from_ledger=True)
        assert again.events == report.events and again.facts == report.facts
        assert await dump(engine) == live
    finally:
        await engine.dispose()


async def grain_rows(engine: AsyncEngine, grain: str) -> list[tuple[Any, ...]]:
    # the stored columns (not ``spot_received``: the database computes it, from 0008 on)
    stored = [c for c in cells_table.columns if c.computed is None]
    async with engine.connect() as conn:
        rows = await conn.execute(select(*stored).where(cells_table.c.grain == grain))
        return sorted((tuple(r) for r in rows), key=repr)


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# A dropped grain: the grain it is answered from now, its period's start, the dimensions kept.
_TOWN = ("kind", "district_code", "town_code")
SUMMED_FROM = {
    "month_town": ("month_coarse", lambda d: d.replace(day=1), _TOWN),
    "month": ("day", lambda d: d.replace(day=1), DIMENSIONS),
}


async def test_the_dropped_grains_go_and_come_back_as_their_sources_sums(
    env: EvaluationEnv,
) -> None:
    """The live apply writes no cell of the grains migration 0012 dropped; downgraded past it,
    each comes back as the sums of the grain that answers its questions now (``week_coarse`` the
    weeks of ``day_coarse``, ``month_town`` the towns of ``month_coarse``, ``month`` the months
    of ``day``), as the live apply wrote them before; upgraded again, they are gone."""
    assert set(SUMMED_FROM) == set(cells.DROPPED)
    await env.fold(*committee_events(env.ticket_id()[2:8].upper()))
    engine = env.runtime.engine
    # positions in ``grain_rows``' rows (the stored columns)
    column = {
        name: i for i, name in enumerate(c.name for c in cells_table.columns if c.computed is None)
    }

    def summed(rows: list[tuple[Any, ...]], start: Any, kept: Sequence[str]) -> dict[Any, Any]:
        sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(CELL_COLUMNS))
        for row in rows:
            dims = (row[column[d]] if d in kept else "" for d in DIMENSIONS)
            at = sums[(start(_day(row[column["period_start"]])), *dims)]
            for i, name in enumerate(CELL_COLUMNS):
                at[i] += row[column[name]]
        return {k: v for k, v in sums.items() if any(v)}

    def as_cells(rows: list[tuple[Any, ...]]) -> dict[Any, Any]:
        return {
            (_day(r[column["period_start"]]), *(r[column[d]] for d in DIMENSIONS)): [
                r[column[n]] for n in CELL_COLUMNS
            ]
            for r in rows
        }

    expected = {}
    for grain, (source, start, kept) in SUMMED_FROM.items():
        assert await grain_rows(engine, grain) == []
        expected[grain] = summed(await grain_rows(engine, source), start, kept)
        assert expected[grain], f"the fixture's tickets are counted in {grain} cells"

    config = alembic_config(registry.SERVICES["evaluation"].migrations, env.settings)
    await asyncio.to_thread(command.downgrade, config, "0012_period_keys")
    await engine.dispose()
    for grain, cells_of in expected.items():
        assert as_cells(await grain_rows(engine, grain)) == cells_of, grain
    weeks = await grain_rows(engine, "week_coarse")
    assert weeks, "the fixture's tickets are counted in week cells"
    await asyncio.to_thread(command.downgrade, config, "0006_apply")
    # the pool's connections prepared their statements before 0010 (down and up) changed the
    # keys' collation; PostgreSQL refuses a plan whose result types changed: fresh connections
    await engine.dispose()
    assert await grain_rows(engine, "week_coarse") == []
    await asyncio.to_thread(command.upgrade, config, "0012_period_keys")
    await engine.dispose()
    assert await grain_rows(engine, "week_coarse") == weeks
    await upgrade_async(registry.SERVICES["evaluation"].migrations, env.settings)
    await engine.dispose()
    for grain in SUMMED_FROM:
        assert await grain_rows(engine, grain) == []


def test_the_rebuild_command_is_mounted() -> None:
    from fengqiao.cli import app

    result = CliRunner().invoke(app, ["evaluation", "--help"])
    assert result.exit_code == 0 and "rebuild" in result.output and "propose" in result.output
