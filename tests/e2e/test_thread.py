"""One real thread through all four services: HTTP in, the real broker between, HTTP out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from services.intake.models import Ticket
from tests.support import wait_until


async def _summary(evaluation: Any) -> dict[str, int]:
    async with evaluation.client() as client:
        return (await client.get("/summary")).json()  # type: ignore[no-any-return]


async def test_ticket_flows_from_intake_through_dispatch_to_evaluation(
    broker, database, prefix, suite
) -> None:
    async with suite(bootstrap=broker.bootstrap, database=database, prefix=prefix) as services:
        intake, dispatch, evaluation = (
            services["intake"],
            services["dispatch"],
            services["evaluation"],
        )
        async with intake.client() as client:
            response = await client.post(
                "/tickets",
                json={
                    "external_id": "hl-0001",
                    "title": "小区路灯不亮",
                    "content": "塔山社区3号楼门口路灯坏了三天，晚上很黑。",
                    "citizen_phone": "13812345678",
                    "category_code": "0102",
                },
            )
        assert response.status_code == 201, response.text
        ticket_id = response.json()["ticket_id"]

        async def counted() -> bool:
            summary = await _summary(evaluation)
            return summary["received"] == 1 and summary["dispatched"] == 1

        await wait_until(
            counted, timeout=20, what="evaluation to count the ticket received and dispatched"
        )
        async with dispatch.client() as client:
            dispatches = (await client.get(f"/tickets/{ticket_id}/dispatches")).json()
        assert [d["department_code"] for d in dispatches] == ["CITY-ZF"]

        for service in services.values():
            async with service.client() as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 200, (service.name, ready.text)
                metrics = (await client.get("/metrics")).text
                assert "fengqiao_http_request_duration_seconds" in metrics
        async with evaluation.client() as client:
            metrics = (await client.get("/metrics")).text
        assert 'fengqiao_events_consumed_total{type="intake.ticket.received"} 1.0' in metrics
        assert 'fengqiao_events_consumed_total{type="dispatch.ticket.assigned"} 1.0' in metrics


async def test_same_channel_id_returns_the_same_ticket(broker, sqlite_db, prefix, suite) -> None:
    async with suite(bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix) as services:
        body = {"external_id": "dup-1", "title": "噪音", "content": "楼下KTV每晚噪音到凌晨两点"}
        async with services["intake"].client() as client:
            first = await client.post("/tickets", json=body)
            second = await client.post("/tickets", json=body)
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["ticket_id"] == second.json()["ticket_id"]
        async with services["intake"].runtime.sessions() as session:
            count = (await session.execute(select(func.count()).select_from(Ticket))).scalar_one()
        assert count == 1


async def test_bad_input_names_the_field_and_stores_nothing(
    broker, sqlite_db, prefix, suite
) -> None:
    async with suite(bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix) as services:
        intake = services["intake"]
        async with intake.client() as client:
            missing = await client.post("/tickets", json={"content": "没有标题"})
            malformed = await client.post(
                "/tickets",
                content=b'{"title": "x", "content": ',
                headers={"content-type": "application/json"},
            )
            bad_code = await client.post(
                "/tickets", json={"title": "x", "content": "y", "category_code": "abc"}
            )
        assert missing.status_code == 422 and "title" in missing.json()["detail"]
        assert malformed.status_code == 422 and "json" in malformed.text.lower()
        assert bad_code.status_code == 422 and "category_code" in bad_code.json()["detail"]
        runtime = intake.runtime
        async with runtime.sessions() as session:
            tickets = (await session.execute(select(func.count()).select_from(Ticket))).scalar_one()
            events = (
                await session.execute(select(func.count()).select_from(runtime.outbox_table))
            ).scalar_one()
        assert (tickets, events) == (0, 0)
