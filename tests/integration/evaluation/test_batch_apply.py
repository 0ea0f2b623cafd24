"""A batch folds to the very rows that the same events give one at a time: the live consumer
hands evaluation whole fetches, so the cell differences of many facts (several events of one
ticket among them) are summed before they are written."""

from __future__ import annotations

import random
from typing import Any

from fengqiao import registry
from services.evaluation import service
from services.evaluation.context import evaluation_calendar
from services.evaluation.rebuild import TABLES
from services.evaluation.settings import EvaluationSettings
from shared import db
from tests.integration.evaluation.committee_fixture import committee_events
from tests.integration.evaluation.test_rebuild import dump
from tests.support import Database


async def _fold(database: Database, name: str, batches: list[list[Any]]) -> dict[str, Any]:
    settings = EvaluationSettings(**database.settings_for(name))
    await registry.upgrade_async("evaluation", settings)
    calendar = evaluation_calendar(settings)
    engine = db.create_engine(settings)
    sessions = db.session_factory(engine)
    try:
        for batch in batches:
            async with sessions() as session, session.begin():
                await service.record_many(session=session, events=batch, calendar=calendar)
        return await dump(engine)
    finally:
        await engine.dispose()


async def test_batches_fold_to_the_rows_of_one_event_at_a_time(database: Database) -> None:
    events = committee_events("BATCH")
    random.Random(7).shuffle(events)
    one_by_one = await _fold(database, "evaluation_single", [[e] for e in events])
    assert one_by_one["ticket_facts"] and one_by_one["eval_cells"]

    rng = random.Random(11)
    batches: list[list[Any]] = []
    rest = list(events)
    while rest:
        size = rng.randint(2, 40)
        batches.append(rest[:size])
        rest = rest[size:]
    # A batch delivered again (a replay after a crash before the offset commit) changes nothing.
    batches.append(events[:25])
    batched = await _fold(database, "evaluation_batched", batches)
    assert {t.name for t in TABLES} <= set(batched)
    for name, rows in one_by_one.items():
        assert batched[name] == rows, name


class _RolledBack(Exception):
    pass


async def test_a_rolled_back_batch_is_not_folded_later(database: Database) -> None:
    """The process remembers the events it decoded (``service.DECODED``), but which events a
    fact holds is the ledger's answer: events of a batch whose transaction rolled back are in
    hand, and remembered, yet do not count when their tickets are refolded later."""
    events = committee_events("ROLLBACK")
    random.Random(5).shuffle(events)
    lost, kept = events[20:30], events[:20] + events[30:]
    expected = await _fold(
        database, "evaluation_without", [kept[i : i + 7] for i in range(0, len(kept), 7)]
    )

    settings = EvaluationSettings(**database.settings_for("evaluation_rolled_back"))
    await registry.upgrade_async("evaluation", settings)
    calendar = evaluation_calendar(settings)
    engine = db.create_engine(settings)
    sessions = db.session_factory(engine)
    try:
        batches = [events[:20], lost, *(events[i : i + 7] for i in range(30, len(events), 7))]
        for batch in batches:
            try:
                async with sessions() as session, session.begin():
                    await service.record_many(session=session, events=batch, calendar=calendar)
                    if batch is lost:
                        assert all(service.DECODED.get(str(e.event_id)) for e in lost)
                        raise _RolledBack
            except _RolledBack:
                pass
        rolled_back = await dump(engine)
    finally:
        await engine.dispose()
    assert expected["ticket_facts"] and expected["eval_cells"]
    for name, rows in expected.items():
        assert rolled_back[name] == rows, name
