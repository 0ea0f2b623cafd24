"""``fengqiao evaluation rebuild``: the projections rebuilt from the topics equal the live ones,
row for row, after the committee fixture went through the real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from alembic import command
from sqlalchemy import delete, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from fengqiao import registry
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


async def test_the_week_roll_up_holds_the_days_sums_and_its_migration_fills_it(
    env: EvaluationEnv,
) -> None:
    """Live apply keeps each week of ``week_coarse`` equal to its seven days of ``day_coarse``;
    on a database that had only the days (downgraded past 0007), the migration fills the weeks
    exactly as live apply writes them."""
    await env.fold(*committee_events(env.ticket_id()[2:8].upper()))
    engine = env.runtime.engine
    weeks = await grain_rows(engine, "week_coarse")
    assert weeks, "the fixture's tickets are counted in week cells"
    column = {name: i for i, name in enumerate(c.name for c in cells_table.columns)}
    from_days: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(CELL_COLUMNS))
    for row in await grain_rows(engine, "day_coarse"):
        day = row[column["period_start"]]
        day = day if isinstance(day, date) else date.fromisoformat(str(day))
        key = (day - timedelta(days=day.weekday()), *(row[column[d]] for d in DIMENSIONS))
        sums = from_days[key]
        for i, name in enumerate(CELL_COLUMNS):
            sums[i] += row[column[name]]
    as_weeks = {
        (
            w[column["period_start"]]
            if isinstance(w[column["period_start"]], date)
            else date.fromisoformat(str(w[column["period_start"]])),
            *(w[column[d]] for d in DIMENSIONS),
        ): [w[column[n]] for n in CELL_COLUMNS]
        for w in weeks
    }
    assert as_weeks == {k: v for k, v in from_days.items() if any(v)}

    config = alembic_config(registry.SERVICES["evaluation"].migrations, env.settings)
    await asyncio.to_thread(command.downgrade, config, "0006_apply")
    # the pool's connections prepared their statements before 0010 (down and up) changed the
    # keys' collation; PostgreSQL refuses a plan whose result types changed: fresh connections
    await engine.dispose()
    assert await grain_rows(engine, "week_coarse") == []
    await upgrade_async(registry.SERVICES["evaluation"].migrations, env.settings)
    await engine.dispose()
    assert await grain_rows(engine, "week_coarse") == weeks


def test_the_rebuild_command_is_mounted() -> None:
    from fengqiao.cli import app

    result = CliRunner().invoke(app, ["evaluation", "--help"])
    assert result.exit_code == 0 and "rebuild" in result.output and "propose" in result.output
