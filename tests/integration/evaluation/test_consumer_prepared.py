"""Evaluation's consumer three fetches deep on PostgreSQL: fetch N+2's ledger insert and reads
(``service.prepare_many``) run while N+1 is folded and N written. N+1's fold is given the
carries of every fetch its reads may not show; a fetch whose commit fails is redone alone and
the fetches staged and prepared after it are fetched again. The tables must be the serial
fold's, whatever fails where."""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from services.evaluation import service
from services.evaluation.context import evaluation_calendar
from services.evaluation.handlers import event_handlers
from services.evaluation.models import inbox_table, outbox_table
from shared.bus import BrokerWatch
from shared.events.base import encode
from shared.inbox import Batch, InboxConsumer
from shared.metrics import ServiceMetrics
from tests.integration.evaluation.committee_fixture import committee_events
from tests.integration.evaluation.test_batch_apply import _evaluation, _fold
from tests.integration.evaluation.test_rebuild import dump
from tests.support import Database


class _Broker:
    """Stands in for the Kafka consumer: two partitions of records handed out ``size`` at a time
    from where each partition's position is (``seek`` moves it back); once every record has been
    handed out and a few fetches came back empty, the watch's epoch moves on (the loop ends)."""

    def __init__(self, watch: BrokerWatch, records: list[ConsumerRecord], size: int) -> None:
        self.watch = watch
        self.size = size
        self.parts: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in records:
            self.parts.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        self.position = dict.fromkeys(self.parts, 0)
        self.committed = dict.fromkeys(self.parts, 0)
        self.empty = 0
        self.seeks = 0

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        left = self.size
        for tp, records in self.parts.items():  # alternately, as a broker's fetches do
            at = self.position[tp]
            take = records[at : at + max(1, left // 2)]
            if take:
                out[tp] = take
                self.position[tp] = take[-1].offset + 1
                left -= len(take)
        if not out:
            self.empty += 1
            if self.empty > 3:
                self.watch.epoch += 1
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.parts)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            assert offset > self.committed[tp], "offsets committed in order"
            self.committed[tp] = offset

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks += 1
        self.position[tp] = offset


class _Lost(Exception):
    pass


@pytest.mark.parametrize("failing", [(), (2, 5, 6)], ids=["clean", "commits-fail"])
async def test_prepared_fetches_fold_to_the_serial_tables(
    database: Database, failing: tuple[int, ...]
) -> None:
    if database.kind != "postgres":
        pytest.skip("the consumer pipelines on PostgreSQL only")
    events = committee_events("PREP")
    random.Random(17).shuffle(events)
    events.sort(key=lambda e: service.fact_key(e) or "")  # a ticket's events in nearby fetches
    expected = await _fold(database, "evaluation_serial", [events])
    records = []
    for n, event in enumerate(events + events[:12]):  # some delivered again
        encoded = encode(event)
        partition = n % 2
        records.append(
            ConsumerRecord(
                "t",
                partition,
                n // 2,
                0,
                0,
                encoded.key,
                encoded.value,
                None,
                0,
                0,
                encoded.headers,
            )
        )
    writes = 0
    deep: list[int] = []
    failed: list[int] = []
    async with _evaluation(database, "evaluation_prepared") as evaluation:
        handlers = event_handlers(
            cast(Any, SimpleNamespace(calendar=evaluation_calendar(evaluation.settings)))
        )
        handler = cast(Batch, next(iter(handlers.values())))
        assert handler.stage is not None and handler.prepare is not None
        stage = handler.stage

        async def failing_stage(
            events: Any, *, session: Any, carry: Any, prepared: Any = None
        ) -> Any:
            if prepared is not None:
                deep.append(len(carry))
            staged = await stage(events, session=session, carry=carry, prepared=prepared)
            write = staged.write

            async def counted(session: Any) -> Any:
                nonlocal writes
                writes += 1
                written = await write(session)
                if writes in failing:
                    failed.append(writes)
                    raise _Lost
                return written

            staged.write = counted
            return staged

        wrapped = replace(handler, stage=failing_stage)
        watch = BrokerWatch()
        consumer = InboxConsumer(
            name="evaluation",
            topics=("intake.tickets",),
            handlers=dict.fromkeys(handlers, wrapped),
            engine=evaluation.engine,
            sessions=evaluation.sessions,
            inbox=inbox_table,
            outbox=outbox_table,
            settings=evaluation.settings,
            metrics=ServiceMetrics("evaluation"),
            watch=watch,
        )
        broker = _Broker(watch, records, size=10)
        await consumer._consume(cast(Any, broker), watch.epoch)
        got = await dump(evaluation.engine)
    assert broker.committed == {tp: len(r) and r[-1].offset + 1 for tp, r in broker.parts.items()}
    assert failed == list(failing)
    assert 2 in deep, deep  # a fetch folded on the carries of two fetches before it
    if failing:
        assert broker.seeks
    assert expected["ticket_facts"] and expected["eval_cells"]
    for name, rows in expected.items():
        assert got[name] == rows, name
