"""Dispatch in the whole suite: tickets from intake are routed, handled by their department over
HTTP, returned and re-routed, and mediated to an agreement that completes the dispatch — with
evaluation's counts right throughout and mediation opening one case per mediation ticket."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.models import TicketRecord
from shared.events.mediation import AgreementReached
from tests.support import wait_until

pytestmark = pytest.mark.timeout(120)
CENTRE = {"x-fengqiao-role": "centre"}


def _as(code: str) -> dict[str, str]:
    return {"x-fengqiao-role": "department", "x-fengqiao-department": code}


async def _post(intake: Any, n: int, category: str, content: str) -> str:
    async with intake.client() as client:
        response = await client.post(
            "/tickets",
            json={
                "external_id": f"flow-{n}",
                "title": f"诉求{n}",
                "content": content,
                "category_code": category,
            },
        )
    assert response.status_code == 201, response.text
    return response.json()["ticket_id"]  # type: ignore[no-any-return]


async def _dispatches(dispatch: Any, ticket_id: str) -> list[dict[str, Any]]:
    async with dispatch.client() as client:
        response = await client.get(f"/tickets/{ticket_id}/dispatches")
    return response.json() if response.status_code == 200 else []  # type: ignore[no-any-return]


async def test_tickets_are_routed_handled_rerouted_and_mediated(
    broker: Any, sqlite_db: Any, prefix: str, suite: Any
) -> None:
    # SQLite only: tests/integration/dispatch runs every dispatch path on PostgreSQL too.
    async with suite(bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix) as services:
        intake, dispatch = services["intake"], services["dispatch"]
        mediation, evaluation = services["mediation"], services["evaluation"]
        handled = await _post(intake, 1, "0204", "小区门口垃圾三天没人清运")
        returned = await _post(intake, 2, "0204", "河边垃圾堆积")
        mediated = await _post(intake, 3, "1301", "邻居装修占用公共走廊，协商不成")

        async def routed() -> bool:
            return all([await _dispatches(dispatch, t) for t in (handled, returned, mediated)])

        await wait_until(routed, timeout=30, what="dispatch to route all three tickets")

        # A department handles its own dispatch end to end.
        (d,) = await _dispatches(dispatch, handled)
        owner = d["department_code"]
        async with dispatch.client() as client:
            for action, body in (
                ("sign-for", None),
                ("contact", {"method": "phone"}),
                ("complete", {"result": "已清运", "resolved": True}),
            ):
                response = await client.post(
                    f"/dispatches/{d['dispatch_id']}/{action}", json=body, headers=_as(owner)
                )
                assert response.status_code == 200, response.text
            # Another department can neither read nor act on it.
            other = _as("CITY-HB")
            assert (
                await client.get(f"/dispatches/{d['dispatch_id']}", headers=other)
            ).status_code == 403

            # A return approved by the centre re-routes without the returning department.
            (r,) = await _dispatches(dispatch, returned)
            first = r["department_code"]
            response = await client.post(
                f"/dispatches/{r['dispatch_id']}/return",
                json={"reason": "非本单位职责"},
                headers=_as(first),
            )
            assert response.status_code == 200, response.text
            approved = await client.post(
                f"/dispatches/{r['dispatch_id']}/return/approve", headers=CENTRE
            )
            assert approved.status_code == 200, approved.text
            (rerouted,) = approved.json()["created"]
            assert rerouted["department_code"] != first

        # The mediation line: mediation opens one case, and its agreement completes the dispatch.
        (m,) = await _dispatches(dispatch, mediated)
        assert m["handling_line"] == "mediation"

        async def case_opened() -> bool:
            async with mediation.client() as client:
                cases = (await client.get("/cases")).json()
            return [c["ticket_id"] for c in cases] == [mediated]

        await wait_until(case_opened, timeout=20, what="mediation to open the case")

        async def case_known() -> bool:
            async with dispatch.runtime.sessions() as session:
                record = await session.get(TicketRecord, mediated)
                return record is not None and record.case_id == f"M-{mediated}"

        await wait_until(case_known, timeout=20, what="dispatch to learn the case")
        # Mediation has no agreement endpoint yet: write its event the way it will, through its
        # outbox, and let the bus carry it.
        runtime = mediation.runtime
        async with runtime.sessions() as session, session.begin():
            await runtime.outbox.add(
                session,
                AgreementReached(
                    case_id=f"M-{mediated}", ticket_id=mediated, kind="written", summary="协议"
                ),
            )
        runtime.notify()

        async def completed() -> bool:
            return (await _dispatches(dispatch, mediated))[0]["status"] == "completed"

        await wait_until(completed, timeout=20, what="the agreement to complete the dispatch")

        async def counted() -> bool:
            async with evaluation.client() as client:
                summary = (await client.get("/summary")).json()
            return summary["received"] == 3 and summary["dispatched"] == 3

        await wait_until(counted, timeout=20, what="evaluation to count three dispatched tickets")
        async with evaluation.client() as client:
            summary = (await client.get("/summary")).json()
        assert summary["awaiting_dispatch"] == 0
        from services.evaluation.models import TicketFact

        async def department_of(ticket_id: str) -> str | None:
            async with evaluation.runtime.sessions() as session:
                fact = await session.get(TicketFact, ticket_id)
            return fact.department_code if fact is not None else None

        # The re-routed assignment is the latest: once evaluation has folded it, it counts
        # (counting three dispatched tickets can happen before the re-route arrives).
        async def rerouted_counts() -> bool:
            return await department_of(returned) == rerouted["department_code"]

        await wait_until(rerouted_counts, timeout=20, what="evaluation to fold the re-route")


async def test_a_batch_file_s_events_reach_dispatch_from_one_outbox_row(
    broker: Any, sqlite_db: Any, prefix: str, suite: Any
) -> None:
    """A patrol's file of 70 rows: intake writes its 70 events as one outbox row (a bundle), and
    the relay's records reach dispatch, which routes every ticket once."""
    header = "外部编号,诉求人,联系电话,标题,内容,地址,分类编码,巡查员"
    lines = [
        f"bulk-{n},张先生,1380013{n:04d},路灯不亮{n},第{n}处路灯不亮,"
        f"枫桥市越城区北海街道塔山社区,0102,网格员01"
        for n in range(70)
    ]
    async with suite(bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix) as services:
        intake, dispatch = services["intake"], services["dispatch"]
        async with intake.client() as client:
            response = await client.post(
                "/channels/grid-patrol-batch/tickets",
                content="\n".join([header, *lines]).encode(),
                headers={"content-type": "text/csv; charset=utf-8", **CENTRE},
            )
        assert response.status_code == 201, response.text
        ticket_ids = [r["ticket_id"] for r in response.json()["results"]]
        assert len(set(ticket_ids)) == 70
        with sqlite3.connect(Path(sqlite_db.root) / "intake.db") as conn:
            bundles = conn.execute(
                "SELECT records FROM outbox WHERE records IS NOT NULL"
            ).fetchall()
        assert bundles == [(70,)]

        async def routed() -> bool:
            async with dispatch.client() as client:
                for ticket_id in ticket_ids:
                    answer = await client.get(f"/tickets/{ticket_id}/dispatches")
                    if answer.status_code != 200 or len(answer.json()) != 1:
                        return False
            return True

        await wait_until(routed, timeout=60, what="dispatch to route every row's ticket once")
