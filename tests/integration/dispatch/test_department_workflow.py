"""The department workflow through the API: every transition, its event and audit row, who may
take it (403 for another department's dispatch, reads included), and 409 naming the state."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events.dispatch import (
    CitizenContacted,
    DispatchCompleted,
    DispatchSigned,
    DispatchTransferred,
    ExtensionDecided,
    MediationRequested,
    ReturnDecided,
    TicketAssigned,
)
from shared.events.mediation import AgreementReached, CaseOpened
from tests.integration.dispatch.support import CENTRE, DispatchEnv, dept
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _tickets_through_the_handler(env: DispatchEnv) -> None:
    """Routing on the bus is test_routing_lines' subject; here tickets skip the fetch wait."""
    env.bus = False


async def _assigned_to_grid(env: DispatchEnv, **extra: Any) -> tuple[str, dict[str, Any], str]:
    grid = env.place()
    ticket = await env.ticket(category="0204", grid=grid, **extra)
    d = await env.one(ticket)
    return ticket, d, f"GRID-WG-{grid}"


async def test_sign_contact_progress_complete(env: DispatchEnv) -> None:
    ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    signed = await env.act(did, "sign-for", dept(me), {"note": "收到"})
    assert signed["dispatch"]["status"] == "signed" and signed["dispatch"]["version"] == 2
    progress = await env.act(did, "progress", dept(me), {"note": "已联系环卫所"})
    assert progress["dispatch"]["status"] == "in_progress"
    contacted = await env.act(did, "contact", dept(me), {"method": "visit", "note": "上门"})
    assert contacted["dispatch"]["status"] == "contacted"
    again = await env.act(did, "progress", dept(me), {"note": "清运中"})
    assert again["dispatch"]["status"] == "contacted"  # progress never undoes a milestone
    done = await env.act(did, "complete", dept(me), {"result": "垃圾已清运", "resolved": True})
    assert done["dispatch"]["status"] == "completed"
    assert done["dispatch"]["result"] == "垃圾已清运" and done["dispatch"]["closed_at"]
    detail = await env.detail(did)
    assert {c["clock"]: c["state"] for c in detail["clocks"]} == {
        "sign_for": "stopped",
        "first_contact": "stopped",
        "resolution": "stopped",
    }
    assert [a["action"] for a in detail["actions"]] == [
        "assign",
        "sign_for",
        "progress",
        "contact",
        "progress",
        "complete",
    ]
    assert detail["actions"][1]["actor_department"] == me
    assert detail["allowed_actions"] == []
    events = await env.events(ticket)
    assert [e.event_type for e in events] == [
        "dispatch.ticket.assigned",
        "dispatch.dispatch.signed",
        "dispatch.progress.noted",
        "dispatch.citizen.contacted",
        "dispatch.progress.noted",
        "dispatch.dispatch.completed",
    ]
    assert isinstance(events[1], DispatchSigned) and not events[1].late
    assert isinstance(events[3], CitizenContacted) and events[3].method == "visit"
    assert isinstance(events[5], DispatchCompleted) and events[5].via == "department"


async def test_approved_return_reroutes_without_that_department(env: DispatchEnv) -> None:
    ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    asked = await env.act(did, "return", dept(me), {"reason": "不属于网格处置范围"})
    assert asked["dispatch"]["status"] == "return_requested"
    approved = await env.act(did, "return/approve", CENTRE, {"note": "同意，改派社区"})
    assert approved["dispatch"]["status"] == "returned"
    (rerouted,) = approved["created"]
    village = me.removeprefix("GRID-WG-")[:12]
    assert rerouted["department_code"].endswith(village)  # the next tier up: the community
    assert rerouted["mode"] == "reroute" and rerouted["parent_dispatch_id"] == did
    # A second return from the community excludes both.
    await env.act(
        rerouted["dispatch_id"],
        "return",
        dept(rerouted["department_code"]),
        {"reason": "应由街道处理"},
    )
    second = await env.act(rerouted["dispatch_id"], "return/approve", CENTRE)
    assert second["created"][0]["department_code"] == f"TOWN-ZZ-{village[:9]}"
    decided = [e for e in await env.events(ticket) if isinstance(e, ReturnDecided)]
    assert [(e.approved, e.rerouted_to) for e in decided] == [
        (True, (rerouted["department_code"],)),
        (True, (f"TOWN-ZZ-{village[:9]}",)),
    ]
    assigned = [e for e in await env.events(ticket) if isinstance(e, TicketAssigned)]
    assert [e.mode for e in assigned] == ["assign", "reroute", "reroute"]


async def test_denied_return_goes_back_to_where_it_was(env: DispatchEnv) -> None:
    ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    await env.act(did, "sign-for", dept(me))
    await env.act(did, "return", dept(me), {"reason": "不归我管"})
    denied = await env.act(did, "return/deny", CENTRE, {"note": "属于网格职责"})
    assert denied["dispatch"]["status"] == "signed" and denied["created"] == []
    decided = [e for e in await env.events(ticket) if isinstance(e, ReturnDecided)]
    assert [(e.approved, e.note) for e in decided] == [(False, "属于网格职责")]


async def test_transfer_hands_over_to_a_new_dispatch_with_fresh_clocks(env: DispatchEnv) -> None:
    ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    await env.act(did, "sign-for", dept(me))
    unknown = await env.act(
        did, "transfer", dept(me), {"to_department": "CITY-NOPE", "reason": "转办"}, expect=422
    )
    assert "CITY-NOPE" in unknown["detail"]
    moved = await env.act(
        did, "transfer", dept(me), {"to_department": "CITY-HB", "reason": "涉及污染，转环保"}
    )
    assert moved["dispatch"]["status"] == "transferred"
    (new,) = moved["created"]
    assert (new["department_code"], new["status"], new["mode"]) == (
        "CITY-HB",
        "assigned",
        "transfer",
    )
    clocks = (await env.detail(new["dispatch_id"]))["clocks"]
    assert all(c["state"] == "running" for c in clocks) and len(clocks) == 3
    events = await env.events(ticket)
    (transferred,) = [e for e in events if isinstance(e, DispatchTransferred)]
    assert (transferred.from_department, transferred.to_department) == (me, "CITY-HB")
    assert events[-1].event_type == "dispatch.ticket.assigned"
    # The new department takes it from there; the old one has nothing left to do.
    await env.act(new["dispatch_id"], "sign-for", dept("CITY-HB"))
    gone = await env.act(did, "progress", dept(me), {"note": "x"}, expect=409)
    assert gone["current_status"] == "transferred"


async def test_approved_extension_moves_the_clock_with_an_audit_record(env: DispatchEnv) -> None:
    ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    await env.act(did, "sign-for", dept(me))
    before = {c["clock"]: c for c in (await env.detail(did))["clocks"]}["resolution"]
    asked = await env.act(
        did, "extension", dept(me), {"working_days": 3, "reason": "需协调物业和环卫"}
    )
    assert asked["dispatch"]["status"] == "extension_requested"
    assert asked["extension"]["status"] == "pending"
    # Extensions of a clock that does not exist, or twice at once, are refused.
    approved = await env.act(did, "extension/approve", CENTRE, {"note": "同意延期3个工作日"})
    assert approved["dispatch"]["status"] == "signed"
    assert approved["dispatch"]["extensions_granted"] == 1
    audit = approved["extension"]
    assert audit["status"] == "approved" and audit["decided_by"] == "centre-duty-officer"
    assert audit["old_due_at"] == before["due_at"]
    # Mon 23 Nov + 5 working days = Mon 30 Nov 17:30; + 3 more = Thu 3 Dec 17:30 (Shanghai).
    assert before["due_at"] == "2026-11-30T09:30:00Z"
    assert audit["new_due_at"] == "2026-12-03T09:30:00Z"
    after = {c["clock"]: c for c in (await env.detail(did))["clocks"]}["resolution"]
    assert after["due_at"] == audit["new_due_at"] == after["next_escalation_at"]
    assert after["original_due_at"] == before["due_at"]
    (decided,) = [e for e in await env.events(ticket) if isinstance(e, ExtensionDecided)]
    assert decided.approved and decided.new_due_at is not None
    no_clock = await env.act(
        did, "extension", dept(me), {"clock": "feedback", "hours": 2, "reason": "xx"}, expect=422
    )
    assert "no feedback clock" in no_clock["detail"]


async def test_denied_extension_keeps_the_clock(env: DispatchEnv) -> None:
    _ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    await env.act(did, "sign-for", dept(me))
    await env.act(did, "contact", dept(me))
    await env.act(did, "extension", dept(me), {"working_days": 10, "reason": "太忙"})
    denied = await env.act(did, "extension/deny", CENTRE, {"note": "理由不充分"})
    assert denied["dispatch"]["status"] == "contacted"  # back where it was
    assert denied["extension"]["status"] == "denied" and denied["extension"]["new_due_at"] is None
    resolution = {c["clock"]: c for c in (await env.detail(did))["clocks"]}["resolution"]
    assert resolution["due_at"] == resolution["original_due_at"]
    bad = await env.act(did, "extension", dept(me), {"reason": "no amount"}, expect=422)
    assert "exactly one of" in bad["detail"]


async def test_centre_supervises_focuses_and_withdraws(env: DispatchEnv) -> None:
    ticket, d, _me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    first = await env.act(did, "supervise", CENTRE, {"note": "请加快办理"})
    second = await env.act(did, "supervise", CENTRE, {"note": "再次督办"})
    assert (first["dispatch"]["supervision_count"], second["dispatch"]["supervision_count"]) == (
        1,
        2,
    )
    assert second["dispatch"]["supervised"] and second["dispatch"]["status"] == "assigned"
    focused = await env.act(did, "focus", CENTRE, {"note": "群众反映强烈"})
    assert focused["dispatch"]["focused"] is True
    withdrawn = await env.act(did, "withdraw", CENTRE, {"reason": "重复工单"})
    assert withdrawn["dispatch"]["status"] == "withdrawn"
    assert await env.event_types(ticket) == [
        "dispatch.ticket.assigned",
        "dispatch.dispatch.supervised",
        "dispatch.dispatch.supervised",
        "dispatch.dispatch.focused",
        "dispatch.dispatch.withdrawn",
    ]


async def test_another_department_gets_403_for_reads_and_writes(env: DispatchEnv) -> None:
    ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    other = dept("CITY-HB")
    for path in (f"/dispatches/{did}", f"/tickets/{ticket}/dispatches"):
        response = await env.client.get(path, headers=other)
        assert response.status_code == 403, (path, response.text)
    refused = await env.act(did, "sign-for", other, expect=403)
    assert refused["detail"] == f"dispatch {did} belongs to another department"
    # Even an action the state would refuse is 403 first: nothing about the dispatch leaks.
    assert (await env.act(did, "complete", other, {"result": "xx"}, expect=403))["detail"]
    inbox = await env.client.get("/inbox", params={"department": me}, headers=other)
    assert inbox.status_code == 403
    # A dispatch id that does not exist is 404 for everybody.
    assert (await env.client.get("/dispatches/D-nope", headers=other)).status_code == 404
    assert (await env.act("D-nope", "sign-for", dept(me), expect=404))["detail"]
    # The owner and the committee read it; the hotline does not.
    assert (await env.client.get(f"/dispatches/{did}", headers=dept(me))).status_code == 200
    committee = {"x-fengqiao-role": "committee"}
    assert (await env.client.get(f"/dispatches/{did}", headers=committee)).status_code == 200
    hotline = {"x-fengqiao-role": "hotline"}
    assert (await env.client.get(f"/dispatches/{did}", headers=hotline)).status_code == 403
    assert (await env.detail(did))["status"] == "assigned"  # nothing changed


async def test_centre_actions_belong_to_centres_within_their_jurisdiction(
    env: DispatchEnv,
) -> None:
    _ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    town = me.removeprefix("GRID-WG-")[:9]
    await env.act(did, "return", dept(me), {"reason": "不归网格"})
    by_department = await env.act(did, "return/approve", dept(me), expect=403)
    assert "centre action" in by_department["detail"]
    elsewhere = {**CENTRE, "x-fengqiao-department": "TOWN-ZZ-339904001"}
    if town == "339904001":
        elsewhere["x-fengqiao-department"] = "TOWN-ZZ-339903001"
    outside = await env.act(did, "return/deny", elsewhere, expect=403)
    assert "outside the jurisdiction" in outside["detail"]
    own_town = {**CENTRE, "x-fengqiao-department": f"TOWN-ZZ-{town}"}
    denied = await env.act(did, "return/deny", own_town)
    assert denied["dispatch"]["status"] == "assigned"


@pytest.mark.parametrize(
    ("setup", "action", "body", "current"),
    [
        ([], "complete", {"result": "提前办结"}, "assigned"),
        ([], "extension", {"working_days": 1, "reason": "xx"}, "assigned"),
        ([], "return/approve", None, "assigned"),
        (["sign-for"], "sign-for", None, "signed"),
        (["sign-for"], "report", None, "signed"),
    ],
    ids=["complete-before-sign", "extend-before-sign", "approve-unasked", "sign-twice", "report"],
)
async def test_an_illegal_transition_is_409_naming_the_current_state(
    env: DispatchEnv, setup: list[str], action: str, body: Any, current: str
) -> None:
    _ticket, d, me = await _assigned_to_grid(env)
    did = d["dispatch_id"]
    for step in setup:
        await env.act(did, step, dept(me))
    headers = CENTRE if action.endswith("approve") else dept(me)
    refused = await env.act(did, action, headers, body, expect=409)
    assert refused["current_status"] == current
    assert f"a dispatch that is {current}" in refused["detail"]


async def test_inbox_filters_and_paginates(env: DispatchEnv) -> None:
    grid = env.place()
    me = f"GRID-WG-{grid}"
    tickets = [await env.ticket(category="0204", grid=grid) for _ in range(3)]
    firsts = [(await env.one(t))["dispatch_id"] for t in tickets]
    await env.act(firsts[0], "sign-for", dept(me))
    everything = (await env.client.get("/inbox", headers=dept(me))).json()
    assert everything["total"] == 3
    assert everything["items"]
    assert all(item["department_code"] == me for item in everything["items"])
    assert all(item["next_due_at"] for item in everything["items"])
    assert everything["items"][0]["dispatch_id"] != firsts[0]  # sign-for due soonest first
    signed = (await env.client.get("/inbox", params={"status": "signed"}, headers=dept(me))).json()
    assert [i["dispatch_id"] for i in signed["items"]] == [firsts[0]]
    both = await env.client.get(
        "/inbox", params=[("status", "signed"), ("status", "assigned")], headers=dept(me)
    )
    assert both.json()["total"] == 3
    page1 = (await env.client.get("/inbox", params={"limit": 2}, headers=dept(me))).json()
    page2 = (
        await env.client.get("/inbox", params={"limit": 2, "offset": 2}, headers=dept(me))
    ).json()
    assert (len(page1["items"]), len(page2["items"]), page1["total"]) == (2, 1, 3)
    seen = {i["dispatch_id"] for i in page1["items"] + page2["items"]}
    assert seen == set(firsts)
    assert (await env.client.get("/inbox", params={"line": "mediation"}, headers=dept(me))).json()[
        "total"
    ] == 0
    assert (await env.client.get("/inbox", params={"overdue": "true"}, headers=dept(me))).json()[
        "total"
    ] == 0
    # A centre names the inbox it reads; the city centre may read any.
    as_centre = await env.client.get("/inbox", params={"department": me}, headers=CENTRE)
    assert as_centre.json()["total"] == 3
    bad = await env.client.get("/inbox", params={"status": "nonsense"}, headers=dept(me))
    assert bad.status_code == 422


async def test_eligible_departments_grab_and_the_first_one_wins(env: DispatchEnv) -> None:
    ticket = await env.ticket(category="0101", grid="339902001002001", title="人行道塌陷")
    did = (await env.one(ticket))["dispatch_id"]
    pool = (await env.client.get("/grab-pool", headers=dept("DIST-ZF-339902"))).json()
    assert did in [p["dispatch_id"] for p in pool]
    not_offered = await env.act(did, "grab", dept("CITY-HB"), expect=403)
    assert "not eligible" in not_offered["detail"]
    assert (await env.client.get(f"/dispatches/{did}", headers=dept("CITY-ZF"))).status_code == 200
    grabbed = await env.act(did, "grab", dept("CITY-ZF"))
    assert grabbed["dispatch"]["status"] == "signed"
    assert grabbed["dispatch"]["department_code"] == "CITY-ZF"
    late = await env.act(did, "grab", dept("DIST-ZF-339902"), expect=403)
    assert "another department" in late["detail"]
    clocks = {c["clock"]: c["state"] for c in (await env.detail(did))["clocks"]}
    assert clocks["sign_for"] == "stopped" and clocks["resolution"] == "running"
    types = await env.event_types(ticket)
    assert types == [
        "dispatch.grab.offered",
        "dispatch.ticket.assigned",
        "dispatch.dispatch.signed",
    ]
    (assigned,) = [e for e in await env.events(ticket) if isinstance(e, TicketAssigned)]
    assert assigned.mode == "grab" and assigned.department_code == "CITY-ZF"


async def test_a_department_refers_a_dispute_to_mediation(env: DispatchEnv) -> None:
    ticket, d, me = await _assigned_to_grid(env, content="邻居把垃圾堆在我家门口，多次协商不成")
    did = d["dispatch_id"]
    early = await env.act(did, "mediation", dept(me), {"reason": "邻里纠纷"}, expect=409)
    assert early["current_status"] == "assigned"
    await env.act(did, "sign-for", dept(me))
    referred = await env.act(did, "mediation", dept(me), {"reason": "邻里纠纷，申请调解"})
    assert referred["dispatch"]["status"] == "signed"
    (requested,) = [e for e in await env.events(ticket) if isinstance(e, MediationRequested)]
    assert (requested.requested_by, requested.department_code) == ("department", me)


async def test_a_mediated_agreement_completes_the_dispatch(env: DispatchEnv) -> None:
    grid = env.place()
    ticket = await env.ticket(category="1302", grid=grid, content="两户因排水问题发生纠纷")
    d = await env.one(ticket)
    assert d["handling_line"] == "mediation"
    case = f"M-{ticket}"
    await env.mediation_event(CaseOpened(case_id=case, ticket_id=ticket, category_code="1302"))
    await env.mediation_event(
        AgreementReached(case_id=case, ticket_id=ticket, kind="verbal", summary="双方同意共修")
    )

    async def completed() -> bool:
        return (await env.one(ticket))["status"] == "completed"

    await wait_until(completed, what="the agreement to complete the dispatch")
    done = await env.detail(d["dispatch_id"])
    assert done["result"].startswith(f"调解达成协议（{case}）") and done["resolved"] is True
    assert [a["action"] for a in done["actions"]] == ["assign", "sign_for", "complete"]
    assert done["actions"][-1]["actor_role"] == "system"
    (completion,) = [e for e in await env.events(ticket) if isinstance(e, DispatchCompleted)]
    assert completion.via == "mediation"
