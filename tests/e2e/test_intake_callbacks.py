"""A second callback for a ticket replaces the first in effect: evaluation counts one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.evaluation.models import TicketFact
from tests.support import wait_until


async def test_evaluation_counts_the_latest_callback_once(broker, database, prefix, suite) -> None:
    async with suite(bootstrap=broker.bootstrap, database=database, prefix=prefix) as services:
        intake, evaluation = services["intake"], services["evaluation"]
        async with intake.client() as client:
            posted = await client.post(
                "/tickets",
                json={"title": "停水", "content": "整栋楼停水一天", "external_id": "cb-e2e-1"},
            )
            ticket_id = posted.json()["ticket_id"]
            first = await client.post(
                f"/tickets/{ticket_id}/callbacks",
                json={"resolved": False, "satisfaction": "dissatisfied", "external_id": "r1"},
            )
            second = await client.post(
                f"/tickets/{ticket_id}/callbacks",
                json={"resolved": True, "satisfaction": "satisfied", "external_id": "r2"},
            )
            repeated = await client.post(
                f"/tickets/{ticket_id}/callbacks",
                json={"resolved": False, "satisfaction": "dissatisfied", "external_id": "r1"},
            )
        assert (first.status_code, second.status_code, repeated.status_code) == (201, 201, 200)

        async def summary() -> dict[str, Any]:
            async with evaluation.client() as client:
                return (await client.get("/summary")).json()  # type: ignore[no-any-return]

        async def settled() -> bool:
            async with evaluation.runtime.sessions() as session:
                fact = await session.get(TicketFact, ticket_id)
            return fact is not None and fact.satisfaction == "satisfied"

        await wait_until(settled, timeout=20, what="evaluation to take the second callback")
        assert (await summary())["feedback"] == 1
        async with evaluation.runtime.sessions() as session:
            facts = (await session.execute(select(TicketFact))).scalars().all()
        assert [(f.ticket_id, f.resolved, f.satisfaction) for f in facts] == [
            (ticket_id, True, "satisfied")
        ]
        metrics = evaluation.runtime.metrics
        assert metrics.events_consumed.labels("intake.feedback.received")._value.get() == 2
