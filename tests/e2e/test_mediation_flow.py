"""Mediation in the whole suite, through the real broker.

1. A ticket routed to the mediation line flows intake → dispatch → mediation → session →
   written agreement → court confirmation → follow-up fulfilled → dispatch completed →
   evaluation counts it.
2. A ticket nobody signs for climbs dispatch's tiers to the city, lands on mediation's backlog
   board (揭榜挂帅), is claimed by an official and cleared.

The four services share one manual clock so that the second flow can move time on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from services.evaluation.models import CaseFact, TicketFact
from shared.bus import create_topics
from shared.clock import ManualClock
from shared.settings import BusSettings
from tests.e2e.conftest import APPS
from tests.support import Database, RunningService, bus_settings, make_settings, serve, wait_until

pytestmark = pytest.mark.timeout(180)
MONDAY = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
CENTRE = {"x-fengqiao-role": "centre"}
COMMITTEE = {"x-fengqiao-role": "committee"}
MEDIATOR = {"x-fengqiao-role": "mediator", "x-fengqiao-subject": "med-e2e-01"}
# Each service's own settings on top of the shared ones (fast loops for the moved clock).
EXTRA: dict[str, dict[str, Any]] = {
    "dispatch": {"scheduler_interval_ms": 100},
    "mediation": {"escalation_interval_ms": 100},
}


@contextlib.asynccontextmanager
async def suite_on(
    clock: ManualClock, *, bootstrap: str, database: Database, prefix: str
) -> AsyncIterator[dict[str, RunningService]]:
    """The four services (tests/e2e/conftest.py's APPS) on one manual clock."""
    await create_topics(BusSettings(**bus_settings(bootstrap, prefix)))
    async with contextlib.AsyncExitStack() as stack:
        running: dict[str, RunningService] = {}
        for name, (factory, settings_cls) in APPS.items():
            settings: Any = await make_settings(
                settings_cls,
                service=name,
                database=database,
                bootstrap=bootstrap,
                prefix=prefix,
                **EXTRA.get(name, {}),
            )
            app = factory(settings, clock=clock)
            running[name] = await stack.enter_async_context(serve(name, app))
        yield running


async def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def _post_ticket(intake: RunningService, external_id: str, category: str, text: str) -> str:
    async with intake.client() as client:
        body = {
            "external_id": external_id,
            "title": text[:10],
            "content": text,
            "category_code": category,
        }
        return (await _ok(await client.post("/tickets", json=body), 201))["ticket_id"]  # type: ignore[no-any-return]


async def _dispatches(dispatch: RunningService, ticket_id: str) -> list[dict[str, Any]]:
    async with dispatch.client() as client:
        response = await client.get(f"/tickets/{ticket_id}/dispatches")
    return response.json() if response.status_code == 200 else []  # type: ignore[no-any-return]


async def test_a_mediated_ticket_ends_in_a_confirmed_fulfilled_agreement(
    broker: Any, sqlite_db: Database, prefix: str
) -> None:
    clock = ManualClock(MONDAY)
    async with suite_on(
        clock, bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix
    ) as services:
        intake, dispatch = services["intake"], services["dispatch"]
        mediation, evaluation = services["mediation"], services["evaluation"]
        ticket = await _post_ticket(intake, "med-e2e-1", "1301", "邻居装修占用公共走廊，协商不成")
        case_id = f"M-{ticket}"

        async def case_opened() -> bool:
            async with mediation.client() as client:
                return (await client.get(f"/cases/{case_id}", headers=CENTRE)).status_code == 200

        await wait_until(case_opened, timeout=30, what="mediation to open the ticket's case")
        (routed,) = await _dispatches(dispatch, ticket)
        assert routed["handling_line"] == "mediation"

        async with mediation.client() as client:
            case = await _ok(await client.get(f"/cases/{case_id}", headers=CENTRE))
            assert (case["ticket_id"], case["dispute_type"], case["status"]) == (
                ticket,
                "neighbour",
                "accepted",
            )
            await _ok(
                await client.post(
                    "/mediators",
                    json={
                        "mediator_id": "med-e2e-01",
                        "name": "老杨",
                        "kind": "full_time",
                        "level": case["level"],
                        "specialities": ["neighbour"],
                    },
                    headers=CENTRE,
                ),
                201,
            )
            (best, *_) = await _ok(
                await client.get(f"/cases/{case_id}/suggestions", headers=CENTRE)
            )
            assert best["mediator_id"] == "med-e2e-01" and best["speciality_match"]
            await _ok(
                await client.post(
                    f"/cases/{case_id}/assign", json={"mediator_id": "med-e2e-01"}, headers=CENTRE
                )
            )
            parties = [
                (
                    await _ok(
                        await client.post(f"/cases/{case_id}/parties", json=p, headers=MEDIATOR),
                        201,
                    )
                )["party_id"]
                for p in (
                    {"role": "applicant", "name": "张三", "phone": "13812345678"},
                    {"role": "respondent", "name": "李四", "phone": "13987654321"},
                )
            ]
            session = await _ok(
                await client.post(
                    f"/cases/{case_id}/sessions",
                    json={
                        "venue": "room",
                        "room_code": "ROOM-1",
                        "starts_at": "2026-12-08T01:00:00Z",
                        "ends_at": "2026-12-08T03:00:00Z",
                        "participants": parties,
                    },
                    headers=MEDIATOR,
                ),
                201,
            )
            await _ok(
                await client.post(
                    f"/sessions/{session['session_id']}/record",
                    json={"attended": parties, "notes": "当面协商", "outcome": "agreement"},
                    headers=MEDIATOR,
                )
            )
            agreement = await _ok(
                await client.post(
                    f"/cases/{case_id}/agreements",
                    json={
                        "kind": "written",
                        "agreed_on": "2026-12-07",
                        "summary": "李四三日内清理走廊",
                        "party_ids": parties,
                        "signed_by": parties,
                        "terms": [
                            {
                                "obligor_party_id": parties[1],
                                "action": "清理走廊杂物",
                                "due_on": "2026-12-10",
                            }
                        ],
                    },
                    headers=MEDIATOR,
                ),
                201,
            )
            aid = agreement["agreement_id"]
            await _ok(
                await client.post(
                    f"/agreements/{aid}/court",
                    json={"status": "requested", "court": "越城区人民法院"},
                    headers=MEDIATOR,
                )
            )
            await _ok(
                await client.post(
                    f"/agreements/{aid}/court",
                    json={"status": "granted", "court_reference": "(2026)浙0602民特88号"},
                    headers=MEDIATOR,
                )
            )

        async def dispatch_completed() -> bool:
            return [d["status"] for d in await _dispatches(dispatch, ticket)] == ["completed"]

        await wait_until(
            dispatch_completed, timeout=30, what="the agreement to complete the dispatch"
        )

        async with mediation.client() as client:
            visit = agreement["follow_ups"][0]["follow_up_id"]
            term = agreement["terms"][0]["term_id"]
            await _ok(
                await client.post(
                    f"/follow-ups/{visit}/record",
                    json={
                        "note": "回访：已清理",
                        "terms": [{"term_id": term, "status": "fulfilled"}],
                    },
                    headers=MEDIATOR,
                )
            )
            closed = await _ok(await client.get(f"/cases/{case_id}", headers=MEDIATOR))
            assert (closed["status"], closed["outcome"]) == ("closed", "fulfilled")
            assert closed["ended_level"] == case["level"]
            stats = await _ok(await client.get("/cases/stats", headers=COMMITTEE))
            assert (
                stats["agreements"] == {"written": 1, "verbal": 0} and stats["success_rate"] == 1.0
            )

        async def counted() -> bool:
            async with evaluation.client() as client:
                summary = (await client.get("/summary", headers=COMMITTEE)).json()
            return summary["received"] == 1 and summary["dispatched"] == 1

        await wait_until(counted, timeout=30, what="evaluation to count the mediated ticket")
        async with evaluation.runtime.sessions() as db:
            fact = (
                await db.execute(select(TicketFact).where(col(TicketFact.ticket_id) == ticket))
            ).scalar_one()
        assert fact.handling_line == "mediation"

        # Evaluation folds mediation.events too: the case counts as one mediation that ended
        # fulfilled, at the level it was held, for the ticket it came from.
        async def case_counted() -> bool:
            async with evaluation.runtime.sessions() as db:
                found = await db.get(CaseFact, case_id)
            return found is not None and found.outcome == "fulfilled"

        await wait_until(case_counted, timeout=30, what="evaluation to count the mediation case")
        async with evaluation.runtime.sessions() as db:
            case_fact = await db.get(CaseFact, case_id)
        assert case_fact is not None
        assert (case_fact.ticket_id, case_fact.level) == (ticket, case["level"])


async def test_a_ticket_escalated_to_the_city_is_claimed_and_cleared_on_the_board(
    broker: Any, sqlite_db: Database, prefix: str
) -> None:
    clock = ManualClock(MONDAY)
    async with suite_on(
        clock, bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix
    ) as services:
        intake, dispatch, mediation = (
            services["intake"],
            services["dispatch"],
            services["mediation"],
        )
        ticket = await _post_ticket(intake, "board-e2e-1", "0204", "河边垃圾堆积无人清理")

        async def routed() -> bool:
            return bool(await _dispatches(dispatch, ticket))

        await wait_until(routed, timeout=30, what="dispatch to route the ticket")
        clock.advance(days=60)  # nobody signs for it: every clock is missed, tier after tier

        async def posted() -> list[dict[str, Any]]:
            async with mediation.client() as client:
                posts = await _ok(await client.get("/board", headers=COMMITTEE))
            return [p for p in posts if p["ticket_id"] == ticket]

        async def on_board() -> bool:
            return bool(await posted())

        await wait_until(on_board, timeout=60, what="the city-tier escalation to reach the board")
        (post,) = await posted()
        assert post["origin"] == "dispatch" and "city" in post["reason"]
        bid = post["board_id"]
        lead = {
            "x-fengqiao-role": "department",
            "x-fengqiao-subject": "cadre-chen",
            "x-fengqiao-department": "CITY-ZJ",
        }
        co = {"x-fengqiao-role": "centre", "x-fengqiao-subject": "cadre-zhou"}
        async with mediation.client() as client:
            await _ok(await client.post(f"/board/{bid}/claim", json={"rank": "局长"}, headers=lead))
            rival = await client.post(f"/board/{bid}/claim", json={"rank": "处长"}, headers=co)
            assert rival.status_code == 409 and "cadre-chen" in rival.text
            await _ok(
                await client.post(
                    f"/board/{bid}/claim", json={"rank": "处长", "co_claimant": True}, headers=co
                )
            )
            await _ok(
                await client.post(
                    f"/board/{bid}/notes", json={"note": "已协调环卫清运"}, headers=lead
                )
            )
            cleared = await _ok(
                await client.post(
                    f"/board/{bid}/clear", json={"note": "垃圾已清运，建立巡查"}, headers=lead
                )
            )
            assert cleared["status"] == "cleared" and len(cleared["claims"]) == 2
            stats = await _ok(await client.get("/board/stats", headers=COMMITTEE))
        assert (stats["posted"], stats["claimed"], stats["cleared"], stats["clearance_rate"]) == (
            1,
            1,
            1,
            1.0,
        )
