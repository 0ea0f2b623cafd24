"""A case's whole work over HTTP on both databases: walk-in, parties (masked but to its
mediators), sessions, agreements, court confirmation, follow-up, failure and escalation, with
the refusals the issue names — each a 4xx naming the problem, with nothing stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from services.mediation.models import Agreement, AgreementTerm, MediationSession, SlotClaim
from tests.integration.mediation.support import (
    CENTRE,
    COMMITTEE,
    add_mediator,
    centre,
    events_of,
    mediator,
    ok,
    unique,
    walk_in,
)
from tests.support import as_role

TOWN = "339921101"  # 枫桥镇
VILLAGE = "339921101201"  # 桃阳村, in it
Env = tuple[Any, httpx.AsyncClient]


def _slot(days: int, hour: int, minutes: int = 0) -> str:
    # Far ahead, a day per test caller, so module-shared rooms never collide by accident.
    return (
        datetime(2031, 3, 3, tzinfo=UTC) + timedelta(days=days, hours=hour, minutes=minutes)
    ).isoformat()


async def _count(app: Any, model: Any) -> int:
    async with app.state.runtime.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_walk_in_runs_from_session_to_a_fulfilled_written_agreement(env: Env) -> None:
    app, client = env
    me = unique("med")
    await add_mediator(client, me)
    case = await walk_in(client, mediator(me))
    case_id = case["case_id"]
    assert case["status"] == "accepted" and case["ticket_id"] is None and case["level"] == "town"

    # The case's mediator reads the parties in clear; a centre over it sees them masked.
    mine = await ok(await client.get(f"/cases/{case_id}", headers=mediator(me)))
    applicant, respondent = mine["parties"]
    assert (applicant["name"], applicant["phone"], applicant["masked"]) == (
        "张三丰",
        "13812345678",
        False,
    )
    theirs = await ok(await client.get(f"/cases/{case_id}", headers=centre(f"TOWN-TW-{TOWN}")))
    assert {p["phone"] for p in theirs["parties"]} == {"138****5678", "139****4321"}
    assert {p["name"] for p in theirs["parties"]} == {"张**", "李*"}
    # Another mediator, and another town's centre, may not see it at all.
    assert (await client.get(f"/cases/{case_id}", headers=mediator(unique("x")))).status_code == 403
    assert (
        await client.get(f"/cases/{case_id}", headers=centre("TOWN-TW-339902001"))
    ).status_code == 403

    parties = [applicant["party_id"], respondent["party_id"]]
    sess = await ok(
        await client.post(
            f"/cases/{case_id}/sessions",
            json={
                "venue": "room",
                "room_code": unique("room"),
                "starts_at": _slot(0, 1),
                "ends_at": _slot(0, 2),
                "participants": parties,
            },
            headers=mediator(me),
        ),
        201,
    )
    await ok(
        await client.post(
            f"/sessions/{sess['session_id']}/record",
            json={"attended": parties, "notes": "双方同意协商", "outcome": "agreement"},
            headers=mediator(me),
        )
    )
    agreement = await ok(
        await client.post(
            f"/cases/{case_id}/agreements",
            json={
                "kind": "written",
                "agreed_on": "2026-12-04",
                "summary": "李四清理走廊并赔偿",
                "party_ids": parties,
                "signed_by": parties,
                "terms": [
                    {"obligor_party_id": parties[1], "action": "清理走廊", "due_on": "2026-12-10"},
                    {"obligor_party_id": parties[1], "amount": "1200.50", "due_on": "2026-12-31"},
                ],
            },
            headers=mediator(me),
        ),
        201,
    )
    assert [t["amount"] for t in agreement["terms"]] == [None, "1200.50"]  # exact, not a float
    assert agreement["follow_ups"], "the first follow-up visit is scheduled with the agreement"
    aid = agreement["agreement_id"]
    for status, extra in (
        ("requested", {"court": "越城区人民法院"}),
        ("granted", {"court_reference": "(2026)浙0602民特123号"}),
    ):
        confirmed = await ok(
            await client.post(
                f"/agreements/{aid}/court", json={"status": status, **extra}, headers=mediator(me)
            )
        )
    assert confirmed["court_status"] == "granted" and confirmed["court_reference"].endswith("123号")
    visit = agreement["follow_ups"][0]["follow_up_id"]
    await ok(
        await client.post(
            f"/follow-ups/{visit}/record",
            json={
                "note": "已履行",
                "terms": [
                    {"term_id": t["term_id"], "status": "fulfilled"} for t in agreement["terms"]
                ],
            },
            headers=mediator(me),
        )
    )
    done = await ok(await client.get(f"/cases/{case_id}", headers=mediator(me)))
    assert (done["status"], done["outcome"], done["ended_level"]) == ("closed", "fulfilled", "town")
    assert [h["to"] for h in done["history"]] == [
        "in_mediation",
        "agreed",
        "court_confirmed",
        "fulfilled",
        "closed",
    ]
    assert await events_of(app, case_id) == [
        "mediation.case.opened",
        "mediation.case.assigned",
        "mediation.session.held",
        "mediation.agreement.reached",
        "mediation.agreement.court_confirmation",
        "mediation.agreement.court_confirmation",
        "mediation.agreement.fulfilled",
        "mediation.case.closed",
    ]
    # A session for the closed case: 409 naming the state.
    late = await client.post(
        f"/cases/{case_id}/sessions",
        json={
            "venue": "video",
            "video_link": "https://meet.example/x",
            "starts_at": _slot(1, 1),
            "ends_at": _slot(1, 2),
        },
        headers=mediator(me),
    )
    assert late.status_code == 409 and "closed" in late.json()["detail"], late.text
    assert late.json()["current_status"] == "closed"


async def test_a_verbal_agreement_at_a_village_room(env: Env) -> None:
    _app, client = env
    me = unique("vil")
    await add_mediator(client, me, level="village", kind="community_figure")
    case = await walk_in(client, mediator(me), level="village", area_code=VILLAGE)
    detail = await ok(await client.get(f"/cases/{case['case_id']}", headers=mediator(me)))
    parties = [p["party_id"] for p in detail["parties"]]
    await ok(
        await client.post(
            f"/cases/{case['case_id']}/sessions",
            json={
                "venue": "village_room",
                "room_code": f"说事拉理室-{VILLAGE}-{me}",
                "starts_at": _slot(2, 1),
                "ends_at": _slot(2, 1, 45),
                "participants": parties,
            },
            headers=mediator(me),
        ),
        201,
    )
    verbal = await ok(
        await client.post(
            f"/cases/{case['case_id']}/agreements",
            json={
                "kind": "verbal",
                "agreed_on": "2026-12-04",
                "summary": "口头达成：退还越界部分",
                "party_ids": parties,
                "terms": [
                    {
                        "obligor_party_id": parties[1],
                        "action": "拆除越界围栏",
                        "due_on": "2026-12-04",
                    }
                ],
            },
            headers=mediator(me),
        ),
        201,
    )
    assert verbal["kind"] == "verbal" and verbal["signed_by"] == []
    # A court confirms written agreements only.
    refused = await client.post(
        f"/agreements/{verbal['agreement_id']}/court",
        json={"status": "requested", "court": "某法院"},
        headers=mediator(me),
    )
    assert refused.status_code == 409 and "verbal" in refused.text
    closed = await ok(await client.post(f"/cases/{case['case_id']}/close", headers=mediator(me)))
    assert (closed["outcome"], closed["ended_level"]) == ("agreed", "village")
    stats = await ok(await client.get("/cases/stats", headers=COMMITTEE))
    assert stats["agreements"]["verbal"] >= 1 and stats["by_ended_level"]["village"] >= 1
    assert "parties" not in str(stats)


async def test_a_failed_village_mediation_goes_up_to_the_town(env: Env) -> None:
    app, client = env
    me = unique("vil")
    await add_mediator(client, me, level="village")
    case = await walk_in(client, mediator(me), level="village", area_code=VILLAGE)
    failed = await ok(
        await client.post(
            f"/cases/{case['case_id']}/fail", json={"reason": "双方分歧过大"}, headers=mediator(me)
        )
    )
    assert (failed["status"], failed["level"], failed["centre_area_code"]) == (
        "accepted",
        "town",
        TOWN,
    )
    assert failed["escalations"] == 1
    # The village mediator has handed it on; the town's centre holds it now.
    assert (await client.get(f"/cases/{case['case_id']}", headers=mediator(me))).status_code == 403
    town = await ok(
        await client.get(f"/cases/{case['case_id']}", headers=centre(f"TOWN-TW-{TOWN}"))
    )
    assert town["mediators"] == []
    village_room = centre(f"VIL-TW-{VILLAGE}")
    assert (await client.get(f"/cases/{case['case_id']}", headers=village_room)).status_code == 403
    assert await events_of(app, case["case_id"]) == [
        "mediation.case.opened",
        "mediation.case.assigned",
        "mediation.case.escalated",
    ]
    # At the top of the ladder a failure with a referral leaves mediation and closes.
    out = await ok(
        await client.post(
            f"/cases/{case['case_id']}/fail",
            json={"reason": "建议诉讼", "referral": "litigation"},
            headers=centre(f"TOWN-TW-{TOWN}"),
        )
    )
    assert (out["status"], out["outcome"], out["ended_level"]) == ("closed", "referred", "town")
    assert (await events_of(app, case["case_id"]))[-3:] == [
        "mediation.case.failed",
        "mediation.case.referred",
        "mediation.case.closed",
    ]


async def test_conflicts_of_interest_are_refused_naming_the_conflict(env: Env) -> None:
    _app, client = env
    related, busy, free = unique("rel"), unique("busy"), unique("free")
    for m in (related, busy, free):
        await add_mediator(client, m)
    await ok(
        await client.post(
            f"/mediators/{related}/relations",
            json={"relation": "表兄弟", "name": "王五", "phone": "137-1111-2222"},
            headers=mediator(related),
        ),
        201,
    )
    phone = "13711112222"
    case = await walk_in(
        client,
        CENTRE,
        parties=[
            {"role": "applicant", "name": "王五", "phone": phone},
            {"role": "respondent", "name": "赵六", "phone": "13600001111"},
        ],
    )
    refused = await client.post(
        f"/cases/{case['case_id']}/assign", json={"mediator_id": related}, headers=CENTRE
    )
    assert refused.status_code == 409 and "表兄弟" in refused.json()["detail"], refused.text
    # ``busy`` mediates another open case where 王五 is the respondent: the other side.
    other = await walk_in(
        client,
        mediator(busy),
        parties=[
            {"role": "applicant", "name": "孙七", "phone": "13500002222"},
            {"role": "respondent", "name": "王五", "phone": phone},
        ],
    )
    refused = await client.post(
        f"/cases/{case['case_id']}/assign", json={"mediator_id": busy}, headers=CENTRE
    )
    assert refused.status_code == 409, refused.text
    assert other["case_id"] in refused.json()["detail"] and "respondent" in refused.json()["detail"]
    ranked = await ok(
        await client.get(f"/cases/{case['case_id']}/suggestions?limit=100", headers=CENTRE)
    )
    by_id = {s["mediator_id"]: s for s in ranked}
    assert (
        by_id[free]["conflict"] is None and by_id[related]["conflict"] and by_id[busy]["conflict"]
    )
    assert [s["mediator_id"] for s in ranked].index(free) < [
        s["mediator_id"] for s in ranked
    ].index(related)
    assigned = await ok(
        await client.post(
            f"/cases/{case['case_id']}/assign", json={"mediator_id": free}, headers=CENTRE
        )
    )
    assert [m["mediator_id"] for m in assigned["mediators"]] == [free]
    # A related party added later is refused as well, and not stored.
    await ok(
        await client.post(
            f"/mediators/{free}/relations",
            json={"relation": "前雇主", "kind": "organisation", "name": "枫桥物业公司"},
            headers=mediator(free),
        ),
        201,
    )
    refused = await client.post(
        f"/cases/{case['case_id']}/parties",
        json={
            "role": "third_party",
            "kind": "organisation",
            "name": "枫桥物业公司",
            "phone": "0575-87001234",
        },
        headers=mediator(free),
    )
    assert refused.status_code == 409 and "前雇主" in refused.text
    detail = await ok(await client.get(f"/cases/{case['case_id']}", headers=mediator(free)))
    assert len(detail["parties"]) == 2


async def test_a_mediator_or_a_room_cannot_be_booked_twice(env: Env) -> None:
    app, client = env
    me, other = unique("m"), unique("m")
    for m in (me, other):
        await add_mediator(client, m)
    first = await walk_in(client, mediator(me))
    second = await walk_in(client, mediator(other))
    room = unique("room")

    async def book(case_id: str, who: str, room_code: str, start: str, end: str) -> httpx.Response:
        return await client.post(
            f"/cases/{case_id}/sessions",
            json={"venue": "room", "room_code": room_code, "starts_at": start, "ends_at": end},
            headers=mediator(who),
        )

    held = await ok(await book(first["case_id"], me, room, _slot(5, 1), _slot(5, 2)), 201)
    sessions_before = await _count(app, MediationSession)
    # Same mediator, another room, overlapping: refused naming the session.
    clash = await book(first["case_id"], me, unique("room"), _slot(5, 1, 45), _slot(5, 3))
    assert clash.status_code == 409 and held["session_id"] in clash.json()["detail"], clash.text
    assert f"mediator {me}" in clash.json()["detail"]
    # Another mediator, same room: refused naming the session.
    clash = await book(second["case_id"], other, room, _slot(5, 1, 30), _slot(5, 1, 45))
    assert clash.status_code == 409 and f"room {room}" in clash.json()["detail"], clash.text
    assert await _count(app, MediationSession) == sessions_before  # nothing half-stored
    metrics = await client.get("/metrics", headers=as_role("operator"))
    refused = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.text.splitlines()
        if line.startswith('fengqiao_mediation_refusals_total{rule="double_booking"}')
    ]
    assert refused and refused[0] >= 2, metrics.text[:500]
    # Back to back is fine, and a cancelled session frees its slots.
    await ok(await book(second["case_id"], other, room, _slot(5, 2), _slot(5, 3)), 201)
    await ok(await client.post(f"/sessions/{held['session_id']}/cancel", headers=mediator(me)))
    await ok(await book(second["case_id"], other, room, _slot(5, 1), _slot(5, 2)), 201)
    # Off the quarter hour, or ending before it starts: 422 naming the field.
    bad = await book(first["case_id"], me, room, _slot(6, 1, 10), _slot(6, 2))
    assert bad.status_code == 422 and bad.json()["field"] == "starts_at"
    bad = await book(first["case_id"], me, room, _slot(6, 2), _slot(6, 1))
    assert bad.status_code == 422 and bad.json()["field"] == "ends_at"


async def test_a_session_outside_the_mediators_weekly_availability_is_refused(env: Env) -> None:
    _, client = env
    me = unique("m")
    await add_mediator(client, me)
    case = await walk_in(client, mediator(me))
    monday = {"availability": [{"weekday": 1, "start": "09:00", "end": "12:00"}]}
    other = await client.put(f"/mediators/{me}/availability", json=monday, headers=mediator("x"))
    assert other.status_code == 403
    await ok(await client.put(f"/mediators/{me}/availability", json=monday, headers=mediator(me)))
    body = {"venue": "video", "video_link": "https://meet.example/a"}
    # 2031-03-04 is a Tuesday; 01:00 UTC is 09:00 in Shanghai.
    tuesday = {**body, "starts_at": _slot(1, 1), "ends_at": _slot(1, 2)}
    refused = await client.post(
        f"/cases/{case['case_id']}/sessions", json=tuesday, headers=mediator(me)
    )
    assert refused.status_code == 409 and "Tue 09:00" in refused.json()["detail"], refused.text
    assert "Mon 09:00–12:00" in refused.json()["detail"]
    monday_session = {**body, "starts_at": _slot(0, 1), "ends_at": _slot(0, 2)}
    await ok(
        await client.post(
            f"/cases/{case['case_id']}/sessions", json=monday_session, headers=mediator(me)
        ),
        201,
    )
    backwards = {"availability": [{"weekday": 2, "start": "12:00", "end": "09:00"}]}
    bad = await client.put(f"/mediators/{me}/availability", json=backwards, headers=CENTRE)
    assert bad.status_code == 422 and bad.json()["field"] == "availability.0.end"


async def test_concurrent_bookings_of_one_slot_let_exactly_one_win(env: Env) -> None:
    app, client = env
    room = unique("room")
    cases = []
    for _ in range(6):
        m = unique("race")
        await add_mediator(client, m)
        cases.append((m, (await walk_in(client, mediator(m)))["case_id"]))

    async def book(who: str, case_id: str) -> httpx.Response:
        return await client.post(
            f"/cases/{case_id}/sessions",
            json={
                "venue": "room",
                "room_code": room,
                "starts_at": _slot(9, 1),
                "ends_at": _slot(9, 2),
            },
            headers=mediator(who),
        )

    answers = await asyncio.gather(*(book(m, c) for m, c in cases))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 409, 409, 409, 409, 409], [a.text for a in answers]
    winner = next(a.json()["session_id"] for a in answers if a.status_code == 201)
    assert all(winner in a.json()["detail"] for a in answers if a.status_code == 409)
    async with app.state.runtime.sessions() as session:
        holders = set(
            (
                await session.execute(
                    select(col(SlotClaim.session_id)).where(
                        col(SlotClaim.resource) == f"room:{room}"
                    )
                )
            ).scalars()
        )
    assert holders == {winner}


async def test_bad_agreements_are_refused_naming_the_problem_and_nothing_is_stored(
    env: Env,
) -> None:
    app, client = env
    me = unique("m")
    await add_mediator(client, me)
    case = await walk_in(client, mediator(me))
    detail = await ok(await client.get(f"/cases/{case['case_id']}", headers=mediator(me)))
    parties = [p["party_id"] for p in detail["parties"]]
    agreements_before = await _count(app, Agreement)
    terms_before = await _count(app, AgreementTerm)
    base = {"kind": "written", "agreed_on": "2026-12-04", "summary": "协议", "signed_by": parties}
    term = {"obligor_party_id": parties[0], "action": "道歉", "due_on": "2026-12-05"}
    cases = [
        ({**base, "party_ids": [], "signed_by": [], "terms": [term]}, "party_ids"),
        (
            {**base, "party_ids": parties, "terms": [{**term, "due_on": "2026-12-01"}]},
            "terms.0.due_on",
        ),
        ({**base, "party_ids": parties, "signed_by": [], "terms": [term]}, "signed_by"),
        ({**base, "party_ids": ["P-NOBODY"], "signed_by": [], "terms": [term]}, "party_ids.0"),
    ]
    for body, field in cases:
        refused = await client.post(
            f"/cases/{case['case_id']}/agreements", json=body, headers=mediator(me)
        )
        assert refused.status_code == 422, refused.text
        assert field in [p["field"] for p in refused.json()["problems"]], refused.text
    floaty = await client.post(
        f"/cases/{case['case_id']}/agreements",
        json={**base, "party_ids": parties, "terms": [{**term, "amount": "10.001"}]},
        headers=mediator(me),
    )
    assert floaty.status_code == 422 and "amount" in floaty.text
    assert await _count(app, Agreement) == agreements_before
    assert await _count(app, AgreementTerm) == terms_before
    still = await ok(await client.get(f"/cases/{case['case_id']}", headers=mediator(me)))
    assert still["status"] == "accepted"


async def test_a_breach_reopens_the_case_and_a_second_one_posts_it_on_the_board(env: Env) -> None:
    _app, client = env
    me = unique("m")
    await add_mediator(client, me)
    case = await walk_in(client, mediator(me))
    case_id = case["case_id"]
    detail = await ok(await client.get(f"/cases/{case_id}", headers=mediator(me)))
    parties = [p["party_id"] for p in detail["parties"]]
    for round_ in (1, 2):
        agreement = await ok(
            await client.post(
                f"/cases/{case_id}/agreements",
                json={
                    "kind": "verbal",
                    "agreed_on": "2026-12-04",
                    "summary": f"第{round_}次协议",
                    "party_ids": parties,
                    "terms": [
                        {"obligor_party_id": parties[1], "amount": "500", "due_on": "2026-12-20"}
                    ],
                },
                headers=mediator(me),
            ),
            201,
        )
        visit = agreement["follow_ups"][0]["follow_up_id"]
        await ok(
            await client.post(
                f"/follow-ups/{visit}/record",
                json={
                    "note": "未付款",
                    "terms": [{"term_id": agreement["terms"][0]["term_id"], "status": "breached"}],
                },
                headers=mediator(me),
            )
        )
        reopened = await ok(await client.get(f"/cases/{case_id}", headers=mediator(me)))
        assert (reopened["status"], reopened["breaches"]) == ("in_mediation", round_)
    board = await ok(await client.get("/board", headers=COMMITTEE))
    (post,) = [p for p in board if p["case_id"] == case_id]
    assert post["origin"] == "mediation" and "breached 2 times" in post["reason"]
    assert "parties" not in post


async def test_roles_committee_counts_only_and_centres_their_level(env: Env) -> None:
    _, client = env
    assert (await client.get("/cases", headers=COMMITTEE)).status_code == 403
    assert (await client.post("/cases", json={}, headers=COMMITTEE)).status_code == 403
    stats = await ok(await client.get("/cases/stats", headers=COMMITTEE))
    assert set(stats) == {
        "total",
        "by_status",
        "by_level",
        "by_dispute_type",
        "by_ended_level",
        "agreements",
        "success_rate",
    }
    hotline = as_role("hotline")
    assert (await client.get("/cases/stats", headers=hotline)).status_code == 403
    # A town centre opens walk-ins at its own level and area only.
    town = centre(f"TOWN-TW-{TOWN}")
    assert (
        await client.post(
            "/cases",
            json={
                "dispute_type": "family",
                "level": "village",
                "area_code": VILLAGE,
                "summary": "x",
            },
            headers=town,
        )
    ).status_code == 403
    ours = await walk_in(client, town, dispute_type="family")
    listed = await ok(await client.get("/cases?limit=200", headers=town))
    assert listed and ours["case_id"] in [c["case_id"] for c in listed]
    assert {(c["level"], c["centre_area_code"]) for c in listed} == {("town", TOWN)}
    bad = await client.post(
        "/cases",
        json={"dispute_type": "family", "level": "town", "area_code": "339921999", "summary": "x"},
        headers=CENTRE,
    )
    assert bad.status_code == 422 and "339921999" in bad.json()["detail"]


async def test_untrusted_text_is_refused_and_free_text_is_scrubbed_for_non_mediators(
    env: Env,
) -> None:
    _app, client = env
    me = unique("m")
    await add_mediator(client, me)
    case = await walk_in(client, mediator(me))
    parties_before = len(
        (await ok(await client.get(f"/cases/{case['case_id']}", headers=mediator(me))))["parties"]
    )
    for body, field in (
        ({"role": "applicant", "name": "张\u0000三"}, "name"),
        ({"role": "applicant", "name": "张三", "address": "一\n二"}, "address"),
        ({"role": "judge", "name": "张三"}, "role"),
        ({"role": "applicant", "name": "张三", "extra": 1}, "extra"),
    ):
        refused = await client.post(
            f"/cases/{case['case_id']}/parties", json=body, headers=mediator(me)
        )
        assert refused.status_code == 422 and field in refused.text, refused.text
    detail = await ok(await client.get(f"/cases/{case['case_id']}", headers=mediator(me)))
    assert len(detail["parties"]) == parties_before
    body = {
        "dispute_type": "family",
        "level": "town",
        "area_code": TOWN,
        "summary": "申请人电话13812345678，要求调解",
    }
    opened = await ok(await client.post("/cases", json=body, headers=mediator(me)), 201)
    theirs = await ok(await client.get(f"/cases/{opened['case_id']}", headers=CENTRE))
    assert "13812345678" not in theirs["summary"] and "138****5678" in theirs["summary"]
    mine = await ok(await client.get(f"/cases/{opened['case_id']}", headers=mediator(me)))
    assert "13812345678" in mine["summary"]
