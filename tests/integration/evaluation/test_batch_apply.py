"""A batch folds to the very rows that the same events give one at a time: the live consumer
hands evaluation whole fetches, so the cell differences of many facts (several events of one
ticket among them) are summed before they are written."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import delete, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fengqiao import registry
from services.evaluation import cells, service
from services.evaluation.context import evaluation_calendar
from services.evaluation.models import cells_table
from services.evaluation.rebuild import TABLES, rebuild
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.events.intake import FeedbackReceived
from shared.inbox import Batch, Pipeline
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

    async def stage(
        events: list[Any], *, session: Any, carry: service.Carry | None
    ) -> service.Staged:
        return await service.stage_many(
            session=session, events=events, calendar=calendar, carry=carry
        )

    try:
        yield _Apply(
            settings, engine, apply, sessions, Batch(apply, deduplicates=True, stage=stage)
        )
    finally:
        await engine.dispose()


@dataclass
class _Apply:
    settings: EvaluationSettings
    engine: AsyncEngine
    batch: Callable[..., Awaitable[None]]
    sessions: async_sessionmaker[AsyncSession]
    staging: Batch


class _CommitLost(Exception):
    pass


async def _pipelined(
    evaluation: _Apply,
    batches: list[list[Any]],
    *,
    fail: Callable[[int, AsyncSession], Awaitable[None]] | None = None,
) -> dict[str, int]:
    """Apply ``batches`` as the consumer does on PostgreSQL (``Pipeline``): batch i+1 staged
    while batch i is written and committed. ``fail(i, session)`` runs in batch i's transaction
    after its writes (to make its commit fail). A batch that fails is redone alone and the one
    staged on its carry thrown away and staged again, as the consumer does."""
    pipe = Pipeline(evaluation.sessions)
    seen = {"carried": 0, "discarded": 0, "redone": 0}
    stage = evaluation.staging.stage
    assert stage is not None

    async def counting(events: list[Any], *, session: Any, carry: Any) -> Any:
        keys = {service.fact_key(e) for e in events}
        if carry is not None and keys & set(carry.ledgers):
            seen["carried"] += 1
        return await stage(events, session=session, carry=carry)

    handler = Batch(evaluation.staging.many, deduplicates=True, stage=counting)
    index = 0
    staged_next = asyncio.Event()  # the batch in flight commits only once the next is staged
    while index < len(batches) or pipe.busy:
        staged = await pipe.stage(handler, batches[index]) if index < len(batches) else None
        staged_next.set()
        failed = pipe.context
        try:
            await pipe.settle()
        except Exception:  # as the consumer: whatever kept the batch from committing
            if staged is not None:
                await pipe.discard(staged)
                seen["discarded"] += 1
            await evaluation.batch(batches[failed])
            seen["redone"] += 1
            continue
        if staged is None:
            break
        staged_next = asyncio.Event()

        async def then(
            session: AsyncSession, _written: Any, at: int = index, gate: asyncio.Event = staged_next
        ) -> None:
            async with asyncio.timeout(30):  # the next batch's staging must not wait on this one
                await gate.wait()
            if fail is not None:
                await fail(at, session)

        pipe.launch(staged, then=then, context=index)
        index += 1
    return seen


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


@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
async def test_batches_of_many_tickets_give_the_cells_a_rebuild_gives(
    database: Database, pipelined: bool
) -> None:
    """The live apply writes only what a batch changes: a cell it knows nothing about is
    inserted whole, a stored one is sent its key and differences alone (on PostgreSQL an
    update, then an insert of only the keys it did not find). Whatever it wrote must be the
    cells a rebuild from the same ledger sums: events in time order, batches of several
    tickets, so cells are created, moved, emptied and created again across batches.

    Pipelined (PostgreSQL only: the consumer does not pipeline on SQLite), each batch is
    staged while the one before is written, consecutive batches sharing tickets — so their
    ledgers and contributions come from the carry — and some events delivered again in the
    next batch (refused, folded once)."""
    if pipelined and database.kind != "postgres":
        pytest.skip("the consumer pipelines on PostgreSQL only")
    events = sorted(committee_events("MANY"), key=lambda e: e.occurred_at)
    batches = [events[start : start + 13] for start in range(0, len(events), 13)]
    if pipelined:
        batches = [b + batches[i - 1][:2] if i else b for i, b in enumerate(batches)]
    async with _evaluation(database, "evaluation_many") as evaluation:
        if pipelined:
            seen = await _pipelined(evaluation, batches)
            assert seen["carried"] > len(batches) // 2, seen
        else:
            for batch in batches:
                await evaluation.batch(batch)
        live = await dump(evaluation.engine)
        async with evaluation.engine.begin() as conn:
            await conn.execute(delete(cells_table))
        await rebuild(evaluation.settings, engine=evaluation.engine, from_ledger=True)
        rebuilt = await dump(evaluation.engine)
    assert len(live["eval_cells"]) > len(cells.GRAINS)
    assert rebuilt == live


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["raise", "kill"])
async def test_a_batch_whose_commit_fails_is_redone_and_the_next_staged_again(
    database: Database, how: str
) -> None:
    """Pipelined, batch i+1 is staged on batch i's carry while i is written. When i's commit
    fails — an error after its writes, or its connection killed under it — i+1's staging is
    thrown away and both are done again: the result is the serial one, nothing counted twice
    and nothing lost (several times over, at several batches)."""
    if database.kind != "postgres":
        pytest.skip("the consumer pipelines on PostgreSQL only")
    events = committee_events("FAIL")
    random.Random(3).shuffle(events)
    events.sort(key=lambda e: service.fact_key(e) or "")  # a ticket's events in consecutive batches
    batches = [events[i : i + 9] for i in range(0, len(events), 9)]
    expected = await _fold(database, "evaluation_serial", batches)
    failing = {2, 5, 6, len(batches) - 1}
    failed: set[int] = set()

    async def fail(index: int, session: AsyncSession) -> None:
        if index in failing and index not in failed:
            failed.add(index)
            if how == "kill":
                await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            raise _CommitLost

    async with _evaluation(database, f"evaluation_{how}") as evaluation:
        seen = await _pipelined(evaluation, batches, fail=fail)
        got = await dump(evaluation.engine)
    assert failed == failing
    assert seen["redone"] == len(failing)
    assert seen["discarded"] == len(failing) - 1  # the last one had none after it
    assert seen["carried"] > 0, seen
    assert expected["ticket_facts"] and expected["eval_cells"]
    for name, rows in expected.items():
        assert got[name] == rows, name


@asynccontextmanager
async def _statements(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """The statements sent through ``engine`` while in the block."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_batch_s_writes_go_as_one_statement_and_one_more_for_new_or_emptied_cells(
    database: Database,
) -> None:
    """On PostgreSQL the facts, contributions and stored cells of a staged batch are written by
    one statement, and the cells it must create or emptied by at most one more: each round trip
    is waited for by the commit the next batch waits for."""
    if database.kind != "postgres":
        pytest.skip("one statement a write on PostgreSQL; SQLite writes table by table")
    events = sorted(committee_events("ONE"), key=lambda e: e.occurred_at)
    async with _evaluation(database, "evaluation_one") as evaluation:
        counts = []
        for start in range(0, len(events), 13):
            async with evaluation.sessions() as session, session.begin():
                staged = await _stage_of(evaluation, events[start : start + 13], session)
                async with _statements(evaluation.engine) as sent:
                    await staged.write(session)
                counts.append(len(sent))
    assert counts and all(1 <= n <= 2 for n in counts), counts


async def _stage_of(evaluation: _Apply, events: list[Any], session: AsyncSession) -> Any:
    assert evaluation.staging.stage is not None
    return await evaluation.staging.stage(events, session=session, carry=None)


async def test_a_fact_refolded_to_the_same_contribution_is_not_written_again(
    database: Database,
) -> None:
    """An event delivered again under a new id (a replay) refolds its ticket to the same
    contribution: nothing of it moves, and its stored contribution is not rewritten."""
    events = sorted(committee_events("SAME"), key=lambda e: e.occurred_at)
    async with _evaluation(database, "evaluation_same") as evaluation:
        await evaluation.batch(events)
        before = await dump(evaluation.engine)
        replay = events[0].model_copy(update={"event_id": uuid.uuid4()})
        async with evaluation.sessions() as session, session.begin():
            staged = await _stage_of(evaluation, [replay], session)
            async with _statements(evaluation.engine) as sent:
                await staged.write(session)
        after = await dump(evaluation.engine)
    assert staged.applied == [str(replay.event_id)]
    assert not [s for s in sent if "eval_contributions" in s], sent
    assert not [s for s in sent if "eval_cells" in s], sent
    for name in ("eval_contributions", "eval_cells", "ticket_facts"):
        assert after[name] == before[name], name


async def test_a_callback_does_not_write_its_ticket_s_dispatch_facts_again(
    database: Database,
) -> None:
    """A callback changes its ticket's fact, not its dispatches': a fetch of callbacks folded
    onto their tickets' states of before writes no dispatch fact (each would be a new version
    of an unchanged row), and the facts are those a fold of every event gives."""
    events = sorted(committee_events("CALLBACK"), key=lambda e: e.occurred_at)
    last = {service.fact_key(e): e for e in events}  # each ticket's latest event
    callbacks = [e for e in last.values() if isinstance(e, FeedbackReceived)]
    rest = [e for e in events if e not in callbacks]
    assert len(callbacks) > 5
    expected = await _fold(database, "evaluation_callback_all", [events])
    async with _evaluation(database, "evaluation_callback") as evaluation:
        await evaluation.batch(rest)
        async with evaluation.sessions() as session, session.begin():
            staged = await _stage_of(evaluation, callbacks, session)
            await staged.write(session)
        got = await dump(evaluation.engine)
    written = {u.table.name: len(u.rows) for u in staged.upserts}
    assert written["ticket_facts"] == len(callbacks), written
    assert written["dispatch_facts"] == 0, written
    for name, rows in expected.items():
        assert got[name] == rows, name
