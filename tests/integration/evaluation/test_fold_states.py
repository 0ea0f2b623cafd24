"""A ticket's new events are folded onto its fold state of before (``service.FOLDED``, and the
carry of the batch in flight) instead of its whole ledger — only where the ledger holds exactly
that state's events and the new ones, so that other consumers' events, a rolled-back batch or a
state the cache has dropped change nothing in what is written."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete

from services.evaluation import service
from services.evaluation.models import cells_table
from services.evaluation.rebuild import rebuild
from shared.events import intake as i
from tests.integration.evaluation.committee_fixture import committee_events
from tests.integration.evaluation.test_batch_apply import _evaluation, _fold, _pipelined
from tests.integration.evaluation.test_rebuild import dump
from tests.support import Database


def _batches(events: list[Any], size: int) -> list[list[Any]]:
    return [events[start : start + size] for start in range(0, len(events), size)]


async def test_two_consumers_each_with_its_own_states_fold_what_one_does(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ticket's intake events go to one consumer and its dispatch events to another (two
    processes, after a rebalance, each holding one topic's partitions): each keeps the states
    of the batches it folded, which miss the other's events. Each must see that in the ledger
    and refold, and the facts and cells must be those of one consumer taking everything."""
    events = sorted(committee_events("TWO"), key=lambda e: e.occurred_at)
    expected = await _fold(database, "evaluation_one_consumer", _batches(events, 7))
    streams = [
        _batches([e for e in events if e.topic == i.TicketReceived.topic], 3),
        _batches([e for e in events if e.topic != i.TicketReceived.topic], 5),
    ]
    states = [service.FoldStates(), service.FoldStates()]
    resumed = service.FOLDS["resumed"]
    async with _evaluation(database, "evaluation_two_consumers") as evaluation:
        for index in range(max(map(len, streams))):
            for stream, kept in zip(streams, states, strict=True):
                if index < len(stream):
                    monkeypatch.setattr(service, "FOLDED", kept)
                    await evaluation.batch(stream[index])
        got = await dump(evaluation.engine)
    assert service.FOLDS["resumed"] > resumed  # some of the states were the ledger's
    assert expected["ticket_facts"] and expected["eval_cells"]
    for name, rows in expected.items():
        assert got[name] == rows, name


async def test_pipelined_batches_fold_onto_the_carried_states(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing kept by the process (a cache of no entries), the batch staged while the
    one before is in flight folds onto that one's carried states; the cells are a rebuild's."""
    if database.kind != "postgres":
        pytest.skip("the consumer pipelines on PostgreSQL only")
    monkeypatch.setattr(service, "FOLDED", service.FoldStates(bound=0))
    events = sorted(committee_events("CARRIED"), key=lambda e: e.occurred_at)
    batches = _batches(events, 9)
    batches = [b + batches[i - 1][:2] if i else b for i, b in enumerate(batches)]
    resumed = service.FOLDS["resumed"]
    async with _evaluation(database, "evaluation_carried") as evaluation:
        await _pipelined(evaluation, batches)
        live = await dump(evaluation.engine)
        async with evaluation.engine.begin() as conn:
            await conn.execute(delete(cells_table))
        await rebuild(evaluation.settings, engine=evaluation.engine, from_ledger=True)
        rebuilt = await dump(evaluation.engine)
    assert service.FOLDS["resumed"] > resumed
    assert live["ticket_facts"] and live["eval_cells"]
    assert rebuilt == live
