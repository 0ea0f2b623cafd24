"""The broker is a transport that may be wiped: the databases are the truth.

Stop the (memory-only) broker in the middle of a flow, start a fresh empty one on the same
port, and every ticket still reaches evaluation exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from services.dispatch.models import Dispatch
from services.evaluation.models import TicketFact
from shared.broker import EmbeddedBroker
from tests.support import wait_until


async def _post(client, n: int) -> str:
    response = await client.post(
        "/tickets",
        json={
            "external_id": f"wipe-{n}",
            "title": f"工单{n}",
            "content": "楼道灯坏了",
            "category_code": "0102",
        },
    )
    assert response.status_code == 201, response.text
    return response.json()["ticket_id"]  # type: ignore[no-any-return]


async def test_every_ticket_reaches_evaluation_exactly_once_across_a_broker_wipe(
    tmp_path: Path, database, prefix, suite
) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        async with suite(bootstrap=broker.bootstrap, database=database, prefix=prefix) as services:
            intake, dispatch, evaluation = (
                services["intake"],
                services["dispatch"],
                services["evaluation"],
            )
            async with intake.client() as client:
                before = [await _post(client, n) for n in range(15)]

                async def some_arrived() -> bool:
                    # Evaluation has consumed some of each topic, so the re-published history
                    # necessarily holds events its inbox has seen.
                    async with evaluation.client() as ev:
                        summary = (await ev.get("/summary")).json()
                    return summary["received"] >= 3 and summary["dispatched"] >= 3

                await wait_until(some_arrived, timeout=20, what="the first tickets to flow")
                broker.stop()  # everything on the broker is gone, mid-flow
                during = [await _post(client, n) for n in range(15, 25)]  # intake keeps accepting
                await asyncio.sleep(0.5)
                broker.start()  # a fresh, empty broker on the same port
                after = [await _post(client, n) for n in range(25, 30)]
            tickets = set(before + during + after)
            assert len(tickets) == 30

            async def all_arrived() -> bool:
                async with evaluation.client() as ev:
                    summary = (await ev.get("/summary")).json()
                return summary["received"] == 30 and summary["dispatched"] == 30

            try:
                # Generous: on a loaded 2-core machine consumer groups may rebalance repeatedly.
                await wait_until(
                    all_arrived, timeout=90, interval=0.2, what="all 30 tickets in evaluation"
                )
            except AssertionError as exc:
                async with evaluation.client() as ev:
                    summary = (await ev.get("/summary")).json()
                states = {
                    name: (
                        s.runtime.watch.cluster_id,
                        s.runtime.watch.epoch,
                        broker.cluster_id,
                        s.runtime.consumer.joined.is_set() if s.runtime.consumer else None,
                    )
                    for name, s in services.items()
                }
                raise AssertionError(f"{exc}; summary={summary}; watch={states}") from exc
            await asyncio.sleep(1.0)  # let any straggling re-deliveries land before counting

            async with evaluation.runtime.sessions() as session:
                facts = (await session.execute(select(TicketFact.ticket_id))).scalars().all()
            assert sorted(facts) == sorted(tickets)
            async with dispatch.runtime.sessions() as session:
                per_ticket = (
                    await session.execute(
                        select(Dispatch.ticket_id, func.count()).group_by(Dispatch.ticket_id)
                    )
                ).all()
            assert len(per_ticket) == 30 and all(count == 1 for _, count in per_ticket)
            metrics = evaluation.runtime.metrics
            assert metrics.events_consumed.labels("intake.ticket.received")._value.get() == 30
            assert metrics.events_consumed.labels("dispatch.ticket.assigned")._value.get() == 30
            # The re-published history really came back and was dropped by the inbox.
            assert metrics.events_duplicate.labels("intake.ticket.received")._value.get() > 0
            assert intake.runtime.metrics.broker_epoch_changes._value.get() == 1
    finally:
        broker.stop()
