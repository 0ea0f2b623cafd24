"""Evaluation in the whole suite: tickets posted through intake and worked through dispatch's
real API on the real broker give the committee figures computed by hand — a return, a transfer,
an extension, callbacks with every answer, and one on a ticket still open (kept, not counted)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events.base import utcnow
from shared.workcalendar import to_shanghai
from tests.support import wait_until

pytestmark = pytest.mark.timeout(150)
CENTRE = {"x-fengqiao-role": "centre"}
COMMITTEE = {"x-fengqiao-role": "committee"}
W = 0.8


def _as(code: str) -> dict[str, str]:
    return {"x-fengqiao-role": "department", "x-fengqiao-department": code}


async def test_figures_from_the_real_services_match_the_hand_computation(
    broker: Any, sqlite_db: Any, prefix: str, suite: Any
) -> None:
    async with suite(bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix) as services:
        intake, dispatch, evaluation = (
            services["intake"],
            services["dispatch"],
            services["evaluation"],
        )
        async with intake.client() as client:
            tickets = []
            for n, text in enumerate(
                ("小区垃圾没人清运", "河边垃圾堆积", "路口垃圾桶满溢", "垃圾站异味")
            ):
                posted = await client.post(
                    "/tickets",
                    json={
                        "external_id": f"eval-{n}",
                        "title": f"诉求{n}",
                        "content": text,
                        "category_code": "0204",
                    },
                )
                assert posted.status_code == 201, posted.text
                tickets.append(posted.json()["ticket_id"])
        t1, t2, t3, t4 = tickets

        async def dispatches(ticket_id: str) -> list[dict[str, Any]]:
            async with dispatch.client() as client:
                response = await client.get(f"/tickets/{ticket_id}/dispatches")
            return response.json() if response.status_code == 200 else []  # type: ignore[no-any-return]

        async def routed() -> bool:
            return all([await dispatches(t) for t in tickets])

        await wait_until(routed, timeout=30, what="dispatch to route the four tickets")

        async with dispatch.client() as client:

            async def act(
                d: dict[str, Any],
                action: str,
                body: Any = None,
                headers: dict[str, str] | None = None,
            ) -> dict[str, Any]:
                response = await client.post(
                    f"/dispatches/{d['dispatch_id']}/{action}",
                    json=body,
                    headers=headers or _as(d["department_code"]),
                )
                assert response.status_code == 200, (action, response.text)
                return response.json()  # type: ignore[no-any-return]

            # T1: signed, contacted, an extension approved, completed.
            (d1,) = await dispatches(t1)
            await act(d1, "sign-for")
            await act(d1, "contact", {"method": "phone"})
            await act(d1, "extension", {"working_days": 2, "reason": "需协调环卫车辆"})
            await act(d1, "extension/approve", headers=CENTRE)
            await act(d1, "complete", {"result": "已清运", "resolved": True})
            # T2: signed, returned and re-routed; the new department completes it.
            (d2,) = await dispatches(t2)
            await act(d2, "sign-for")
            await act(d2, "return", {"reason": "非本单位职责"})
            (rerouted,) = (await act(d2, "return/approve", headers=CENTRE))["created"]
            await act(rerouted, "sign-for")
            await act(rerouted, "contact", {"method": "visit"})
            await act(rerouted, "complete", {"result": "已处理", "resolved": True})
            # T3: signed, transferred; the receiving department completes it.
            (d3,) = await dispatches(t3)
            await act(d3, "sign-for")
            (moved,) = (
                await act(d3, "transfer", {"to_department": "CITY-HB", "reason": "属于河道保洁"})
            )["created"]
            await act(moved, "sign-for")
            await act(moved, "complete", {"result": "已清理", "resolved": True})
            # T4: signed only — still open.
            (d4,) = await dispatches(t4)
            await act(d4, "sign-for")

        async with intake.client() as client:
            for ticket, resolved, satisfaction in (
                (t1, True, "satisfied"),
                (t2, False, "dissatisfied"),
                (t3, True, "basically_satisfied"),
                (t4, True, "satisfied"),  # on an open ticket: kept, not counted
            ):
                response = await client.post(
                    f"/tickets/{ticket}/callbacks",
                    json={
                        "resolved": resolved,
                        "satisfaction": satisfaction,
                        "external_id": f"cb-{ticket}",
                    },
                )
                assert response.status_code == 201, response.text

        today = to_shanghai(utcnow()).date().isoformat()

        async def figures() -> dict[str, Any]:
            async with evaluation.client() as client:
                response = await client.get(
                    "/figures", params={"period": "day", "on": today}, headers=COMMITTEE
                )
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        async def settled() -> bool:
            counters = (await figures())["rows"][0]["counters"]
            return (
                counters["callbacks"] == 3
                and counters["callbacks_on_open"] == 1
                and counters["sign_due"] == 6
                and counters["extended"] == 1
            )

        await wait_until(settled, timeout=40, what="evaluation to fold every event")
        answer = await figures()
        assert answer["sample_size"] == 4
        values = {m["id"]: m["value"] for m in answer["rows"][0]["metrics"]}
        # dispatches signed: T1, T2 (first and re-routed), T3 (first and transferred), T4
        assert values["sign_for_on_time"] == 1.0
        assert values["first_contact_on_time"] == 1.0  # T1 and T2's re-routed dispatch
        assert values["on_time_completion"] == 1.0
        assert values["resolution"] == round(2 / 3, 6)
        assert values["satisfaction"] == round((1 + W * 1) / 3, 6)
        assert values["one_time_resolution"] == round(2 / 3, 6)  # T2 was returned
        assert values["return_rate"] == 0.25
        assert values["transfer_rate"] == 0.25
        assert values["extension_rate"] == 0.25
        assert values["escalation_rate"] == 0.0
