"""The rebuild's fold in forked worker processes gives the same rows as the fold in one
process, on SQLite and PostgreSQL (rebuilt = live is ``test_rebuild``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
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


async def batches(
    events: Sequence[Event], keyed: Callable[[int, bytes], bytes | None] = lambda _, key: key
) -> AsyncIterator[list[Any]]:
    records = [
        Rec(r.value, list(r.headers), keyed(n, r.key)) for n, r in enumerate(map(encode, events))
    ]
    for start in range(0, len(records), 7):
        yield records[start : start + 7]


async def rebuilt(
    settings: EvaluationSettings,
    events: Sequence[Event],
    workers: int,
    keyed: Callable[[int, bytes], bytes | None] = lambda _, key: key,
) -> Any:
    stages: list[tuple[str, int, int | None]] = []
    report = await rebuilding.rebuild(
        settings,
        source=batches(events, keyed),
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


async def test_records_whose_keys_do_not_name_their_fact_reach_the_fact_s_worker(
    database: Database,
) -> None:
    # The rebuilding process routes records by their Kafka key without decoding them. Keys
    # that name no fact (another ticket's, none at all) and redeliveries (the same record
    # twice, under different keys) must still give each fact all its events, once, in the
    # order read: the worker that decodes such a record hands it to the fact's own.
    events = committee_events("K")
    again = [*events, *events[::3]]
    settings = EvaluationSettings(**database.settings_for("evaluation_workers"))
    await registry.upgrade_async("evaluation", settings)
    one_report, one = await rebuilt(settings, events, workers=1)

    def scrambled(n: int, key: bytes) -> bytes | None:
        return None if n % 5 == 0 else f"elsewhere-{n}".encode()

    two_report, two = await rebuilt(settings, again, workers=2, keyed=scrambled)
    assert two_report.records == len(again) and two_report.events == one_report.events
    assert (two_report.facts, two_report.cells) == (one_report.facts, one_report.cells)
    for name, rows in one.items():
        assert two[name] == rows, name


async def test_with_workers_the_rebuilding_process_decodes_no_record(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the read stage's decoding and validation is spread over the workers, not done here first
    rebuilding_pid = os.getpid()
    decode = rebuilding._decode

    def only_in_a_worker(record: Any) -> Any:
        assert os.getpid() != rebuilding_pid, "a record decoded in the rebuilding process"
        return decode(record)

    monkeypatch.setattr(rebuilding, "_decode", only_in_a_worker)  # inherited by the workers
    events = committee_events("D")
    settings = EvaluationSettings(**database.settings_for("evaluation_workers"))
    await registry.upgrade_async("evaluation", settings)
    report, _ = await rebuilt(settings, events, workers=2)
    assert report.records == report.events == len(events)


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


@pytest.mark.parametrize("step", ["_decode", "fold_ticket"])
async def test_a_worker_that_fails_fails_the_rebuild_and_the_indexes_are_back(
    database: Database, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    settings = EvaluationSettings(**database.settings_for("evaluation_workers"))
    await registry.upgrade_async("evaluation", settings)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"a {step} that fails")

    monkeypatch.setattr(rebuilding, step, broken)  # inherited by the forked workers
    # enough records that the rebuilding process is still sending when a worker fails
    events = [e for prefix in "FGHIJ" for e in committee_events(prefix)] * 40
    with pytest.raises(RuntimeError, match=f"a {step} that fails"):
        await rebuilding.rebuild(settings, source=batches(events), workers=2)
    engine = db.create_engine(settings)
    try:
        tables = rebuilding.TABLES
        assert await index_names(engine) == {t.name: {i.name for i in t.indexes} for t in tables}
    finally:
        await engine.dispose()
