"""A batch folds to the very rows that the same events give one at a time: the live consumer
hands evaluation whole fetches, so the cell differences of many facts (several events of one
ticket among them) are summed before they are written."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from fengqiao import registry
from services.evaluation import cells, service
from services.evaluation.context import evaluation_calendar
from services.evaluation.models import cells_table
from services.evaluation.rebuild import TABLES, rebuild
from services.evaluation.settings import EvaluationSettings
from shared import db
from tests.integration.evaluation.committee_fixture import committee_events
from tests.integration.evaluation.test_rebuild import dump
from tests.support import Database


@asynccontextmanager
async def _evaluation(database: Database, name: str) -> AsyncIterator[_Apply]:
    """A migrated evaluation database of its own, and a way to apply a batch to it."""
    settings = EvaluationSettings(**database.settings_for(name))
    await registry.upgrade_async("evaluation", settings)
    calendar = evaluation_calendar(settings)
    engine = db.create_engine(settings)
    sessions = db.session_factory(engine)

    async def apply(batch: list[Any], *, then: Callable[[], None] | None = None) -> None:
        async with sessions() as session, session.begin():
            await service.record_many(session=session, events=batch, calendar=calendar)
            if then is not None:
                then()

    try:
        yield _Apply(settings, engine, apply)
    finally:
        await engine.dispose()


@dataclass
class _Apply:
    settings: EvaluationSettings
    engine: AsyncEngine
    batch: Callable[..., Awaitable[None]]


async def _fold(database: Database, name: str, batches: list[list[Any]]) -> dict[str, Any]:
    async with _evaluation(database, name) as evaluation:
        for batch in batches:
            await evaluation.batch(batch)
        return await dump(evaluation.engine)


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

    def roll_back() -> None:
        assert all(service.DECODED.get(str(e.event_id)) for e in lost)
        raise _RolledBack

    async with _evaluation(database, "evaluation_rolled_back") as evaluation:
        batches = [events[:20], lost, *(events[i : i + 7] for i in range(30, len(events), 7))]
        for batch in batches:
            with suppress(_RolledBack):
                await evaluation.batch(batch, then=roll_back if batch is lost else None)
        rolled_back = await dump(evaluation.engine)
    assert expected["ticket_facts"] and expected["eval_cells"]
    for name, rows in expected.items():
        assert rolled_back[name] == rows, name


async def test_batches_of_many_tickets_give_the_cells_a_rebuild_gives(database: Database) -> None:
    """The live apply writes only what a batch changes: a cell it knows nothing about is
    inserted whole, a stored one is sent its key and differences alone (on PostgreSQL an
    update, then an insert of only the keys it did not find). Whatever it wrote must be the
    cells a rebuild from the same ledger sums: events in time order, batches of several
    tickets, so cells are created, moved, emptied and created again across batches."""
    events = sorted(committee_events("MANY"), key=lambda e: e.occurred_at)
    async with _evaluation(database, "evaluation_many") as evaluation:
        for start in range(0, len(events), 13):
            await evaluation.batch(events[start : start + 13])
        live = await dump(evaluation.engine)
        async with evaluation.engine.begin() as conn:
            await conn.execute(delete(cells_table))
        await rebuild(evaluation.settings, engine=evaluation.engine, from_ledger=True)
        rebuilt = await dump(evaluation.engine)
    assert len(live["eval_cells"]) > len(cells.GRAINS)
    assert rebuilt == live
