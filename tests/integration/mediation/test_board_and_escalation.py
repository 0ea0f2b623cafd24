"""The escalation loop and the backlog board against the real broker, on both databases:
an overdue village case goes up to the town on the injected clock; dispatch's escalations to
the city tier and repeated re-routings are posted; officials claim (one lead, racing claims
included), co-claim, note progress and clear; the board counts it all."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.mediation.scheduler import run_pass
from shared.bus import make_producer
from shared.clock import ManualClock
from shared.events import DISPATCH_TOPIC
from shared.events.dispatch import DispatchEscalated, TicketAssigned
from tests.integration.mediation.support import (
    COMMITTEE,
    add_mediator,
    centre,
    events_of,
    mediator,
    official,
    ok,
    running,
    unique,
    walk_in,
)
from tests.support import Database, as_role, publish_event, wait_until

pytestmark = pytest.mark.timeout(120)
VILLAGE = "339921101201"
START = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)  # a Friday, 10:00 in Shanghai


class Board:
    """A running mediation app on a manual clock, with a producer on its dispatch topic."""

    def __init__(self, app: Any, client: httpx.AsyncClient, clock: ManualClock, producer: Any):
        self.app, self.client, self.clock, self.producer = app, client, clock, producer

    async def publish(self, event: Any) -> None:
        await publish_event(self.producer, self.app.state.runtime.settings, DISPATCH_TOPIC, event)

    async def posts(self) -> list[dict[str, Any]]:
        return await ok(await self.client.get("/board?limit=200", headers=COMMITTEE))  # type: ignore[no-any-return]


@pytest.fixture
async def board(broker: Any, database: Database) -> AsyncIterator[Board]:
    clock = ManualClock(START)
    async with running(
        database, broker.bootstrap, clock=clock, auth_mode="token", escalation_interval_ms=50
    ) as (app, client):
        producer = make_producer(app.state.runtime.settings, client_id="test-dispatch")
        await producer.start()
        try:
            yield Board(app, client, clock, producer)
        finally:
            await producer.stop()


def _escalated(ticket_id: str, target: str | None, level: int = 3) -> DispatchEscalated:
    return DispatchEscalated(
        ticket_id=ticket_id,
        dispatch_id=f"{ticket_id}-D1",
        department_code="TOWN-ZF-339921101",
        clock="resolution",
        level=level,
        target_department_code=target,
        due_at=START + timedelta(days=1),
    )


def _rerouted(ticket_id: str, n: int) -> TicketAssigned:
    return TicketAssigned(
        ticket_id=ticket_id,
        dispatch_id=f"{ticket_id}-D{n}",
        department_code=f"DIST-Z{n}-339902",
        department_tier="district",
        area_code="339902001",
        category_code="0204",
        channel="hotline-12345-phone",
        mode="reroute",
    )


async def test_an_overdue_village_case_goes_up_to_the_town(board: Board) -> None:
    client = board.client
    me = unique("vil")
    await add_mediator(client, me, level="village")
    case = await walk_in(client, mediator(me), level="village", area_code=VILLAGE)
    case_id = case["case_id"]
    board.clock.advance(days=6)  # 4 working days in: still the village's
    assert (await run_pass(board.app.state.runtime.context)).escalated == 0
    town = centre("TOWN-TW-339921101")
    assert (await client.get(f"/cases/{case_id}", headers=mediator(me))).status_code == 200
    board.clock.advance(days=10)  # past 7 working days

    async def escalated() -> bool:
        return (await client.get(f"/cases/{case_id}", headers=town)).status_code == 200

    await wait_until(escalated, what="the loop to hand the case to the town")
    held = await ok(await client.get(f"/cases/{case_id}", headers=town))
    assert (held["level"], held["escalations"], held["status"]) == ("town", 1, "accepted")
    assert [h["actor"] for h in held["history"]] == ["system:mediation"]
    assert (await events_of(board.app, case_id))[-1] == "mediation.case.escalated"
    # A pass that sees the case again (another replica, a restart) moves it no further.
    assert (await run_pass(board.app.state.runtime.context)).escalated == 0
    again = await ok(await client.get(f"/cases/{case_id}", headers=town))
    assert again["escalations"] == 1, "one step per time limit, however many passes"


async def test_a_dispatch_escalation_is_posted_claimed_and_cleared(board: Board) -> None:
    client = board.client
    hard, district, rerouted = (f"T{uuid.uuid4().hex[:10]}" for _ in range(3))
    await board.publish(_escalated(district, "DIST-ZZ-339902", level=1))  # not the city yet
    await board.publish(_escalated(hard, None))  # past the city centre
    for n in (1, 2, 3):
        await board.publish(_rerouted(rerouted, n))

    async def posted() -> bool:
        return {p["ticket_id"] for p in await board.posts()} >= {hard, rerouted}

    await wait_until(posted, what="both hard tickets on the board")
    posts = {p["ticket_id"]: p for p in await board.posts()}
    assert district not in posts
    assert "re-routed 3 times" in posts[rerouted]["reason"]
    post = posts[hard]
    assert (post["origin"], post["status"]) == ("dispatch", "posted")
    bid = post["board_id"]

    lead, co, late = official("cadre-wang"), official("cadre-li"), official("cadre-zhao")
    claimed = await ok(
        await client.post(f"/board/{bid}/claim", json={"rank": "副镇长"}, headers=lead)
    )
    assert (claimed["status"], claimed["lead_claimant"]) == ("claimed", "cadre-wang")
    assert claimed["due_on"] is not None
    second = await client.post(f"/board/{bid}/claim", json={"rank": "科长"}, headers=late)
    assert second.status_code == 409 and "cadre-wang" in second.json()["detail"], second.text
    joined = await ok(
        await client.post(
            f"/board/{bid}/claim", json={"rank": "科长", "co_claimant": True}, headers=co
        )
    )
    assert [(c["claimant_id"], c["co_claimant"]) for c in joined["claims"]] == [
        ("cadre-wang", False),
        ("cadre-li", True),
    ]
    twice = await client.post(f"/board/{bid}/claim", json={"co_claimant": True}, headers=co)
    assert twice.status_code == 409
    await ok(await client.post(f"/board/{bid}/notes", json={"note": "已约谈双方"}, headers=co))
    outsider = await client.post(f"/board/{bid}/notes", json={"note": "x"}, headers=late)
    assert outsider.status_code == 403
    not_lead = await client.post(f"/board/{bid}/clear", json={"note": "x"}, headers=co)
    assert not_lead.status_code == 403 and "cadre-wang" in not_lead.text
    cleared = await ok(
        await client.post(f"/board/{bid}/clear", json={"note": "问题已解决"}, headers=lead)
    )
    assert (cleared["status"], [n["note"] for n in cleared["notes"]]) == ("cleared", ["已约谈双方"])
    public = await ok(await client.get(f"/board/{bid}", headers=as_role("hotline")))
    assert (public["status"], public["outcome_note"]) == ("cleared", "问题已解决")
    assert (await client.get("/board/B-NOPE", headers=COMMITTEE)).status_code == 404
    stats = await ok(await client.get("/board/stats", headers=as_role("hotline")))
    assert stats == {
        "posted": 2,
        "claimed": 1,
        "cleared": 1,
        "abandoned": 0,
        "open": 1,
        "claimants": 2,
        "clearance_rate": 1.0,
    }
    # Officials racing for the other post: exactly one lead.
    other = posts[rerouted]["board_id"]
    racers = [official(f"cadre-{n}") for n in range(5)]
    answers = await asyncio.gather(
        *(client.post(f"/board/{other}/claim", json={}, headers=h) for h in racers)
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409, 409], [
        a.text for a in answers
    ]
    # The committee reads the board but claims nothing.
    refused = await client.post(f"/board/{other}/claim", json={}, headers=COMMITTEE)
    assert refused.status_code == 403
