"""``fengqiao evaluation rebuild``: the projections rebuilt from the topics equal the live ones,
row for row, after the committee fixture went through the real broker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from fengqiao import registry
from services.evaluation.models import cells_table
from services.evaluation.rebuild import TABLES, rebuild
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.events.base import Event
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


def test_the_rebuild_command_is_mounted() -> None:
    from fengqiao.cli import app

    result = CliRunner().invoke(app, ["evaluation", "--help"])
    assert result.exit_code == 0 and "rebuild" in result.output and "propose" in result.output
