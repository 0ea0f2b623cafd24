"""The rebuild's fold in forked worker processes gives the same rows as the fold in one
process, on SQLite and PostgreSQL (rebuilt = live is ``test_rebuild``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from fengqiao import registry
from services.evaluation import rebuild as rebuilding
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.events.base import Event, encode
from tests.integration.evaluation.committee_fixture import committee_events
from tests.integration.evaluation.test_rebuild import dump, index_names
from tests.support import Database


@dataclass
class Rec:
    value: bytes
    headers: list[tuple[str, bytes]]
    key: bytes


async def batches(events: Sequence[Event]) -> AsyncIterator[list[Any]]:
    records = [Rec(r.value, list(r.headers), r.key) for r in map(encode, events)]
    for start in range(0, len(records), 7):
        yield records[start : start + 7]


async def rebuilt(settings: EvaluationSettings, events: Sequence[Event], workers: int) -> Any:
    stages: list[tuple[str, int, int | None]] = []
    report = await rebuilding.rebuild(
        settings,
        source=batches(events),
        workers=workers,
        progress=lambda stage, done, total: stages.append((stage, done, total)),
    )
    assert stages[-1] == ("fold", report.facts, report.facts)  # the bar ends full
    engine = db.create_engine(settings)
    try:
        return report, await dump(engine)
    finally:
        await engine.dispose()


async def test_two_workers_fold_what_one_folds_row_for_row(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batches of three facts: each worker writes several, and the cells come from both
    monkeypatch.setattr(rebuilding, "BATCH", 3)
    events = committee_events("W")
    settings = EvaluationSettings(**database.settings_for("evaluation_workers"))
    await registry.upgrade_async("evaluation", settings)

    one_report, one = await rebuilt(settings, events, workers=1)
    assert one_report.facts > 2 * rebuilding.BATCH and one_report.cells > 0
    assert one["ticket_facts"] and one["dispatch_facts"] and one["case_facts"]
    two_report, two = await rebuilt(settings, events, workers=2)
    assert (two_report.facts, two_report.cells) == (one_report.facts, one_report.cells)
    for name, rows in one.items():
        assert two[name] == rows, name


async def test_fewer_than_one_worker_is_refused_before_anything_is_emptied(
    database: Database,
) -> None:
    settings = EvaluationSettings(**database.settings_for("evaluation_workers"))
    await registry.upgrade_async("evaluation", settings)
    _, before = await rebuilt(settings, committee_events("Z"), workers=1)
    with pytest.raises(ValueError, match="at least one worker"):
        await rebuilding.rebuild(settings, source=batches([]), workers=0)
    engine = db.create_engine(settings)
    try:
        assert await dump(engine) == before
    finally:
        await engine.dispose()


def test_the_command_takes_a_number_of_workers_and_refuses_none() -> None:
    from fengqiao.cli import app

    runner = CliRunner()
    assert "--workers" in runner.invoke(app, ["evaluation", "rebuild", "--help"]).output
    refused = runner.invoke(app, ["evaluation", "rebuild", "--workers", "0"])
    assert refused.exit_code == 2 and "--workers" in refused.output


async def test_a_worker_that_fails_fails_the_rebuild_and_the_indexes_are_back(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = EvaluationSettings(**database.settings_for("evaluation_workers"))
    await registry.upgrade_async("evaluation", settings)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a fold that fails")

    monkeypatch.setattr(rebuilding, "fold_ticket", broken)  # inherited by the forked workers
    with pytest.raises(RuntimeError, match="a fold that fails"):
        await rebuilding.rebuild(settings, source=batches(committee_events("F")), workers=2)
    engine = db.create_engine(settings)
    try:
        tables = rebuilding.TABLES
        assert await index_names(engine) == {t.name: {i.name for i in t.indexes} for t in tables}
    finally:
        await engine.dispose()
