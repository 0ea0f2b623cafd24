"""Time on the manual clock: the whistle board on time and late, missed clocks escalating up
the tiers once per step, grab windows running out, the overdue filter, and extensions that move
an escalation. The module's clock only moves forward; each test reads its own deadlines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from services.dispatch.deadlines import scheduler
from services.dispatch.models import Escalation
from shared.events.dispatch import (
    DepartmentReported,
    DispatchEscalated,
    TicketAssigned,
    WhistleBlown,
)
from tests.integration.dispatch.support import CENTRE, DispatchEnv, dept
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _tickets_through_the_handler(env: DispatchEnv) -> None:
    """Routing on the bus is test_routing_lines' subject; here tickets skip the fetch wait."""
    env.bus = False


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _move_to(env: DispatchEnv, moment: datetime) -> None:
    """Move the clock forward to ``moment`` (never back: other tests' clocks ran already)."""
    if moment > env.clock.now():
        env.clock.set(moment)


async def _clock(env: DispatchEnv, dispatch_id: str, name: str) -> dict[str, Any]:
    return {c["clock"]: c for c in (await env.detail(dispatch_id))["clocks"]}[name]


async def _escalations(env: DispatchEnv, dispatch_id: str) -> list[tuple[str, int, str | None]]:
    async with env.runtime.sessions() as session:
        rows = await session.execute(
            select(Escalation.clock, Escalation.level, Escalation.target_department_code)
            .where(Escalation.dispatch_id == dispatch_id)  # type: ignore[arg-type]
            .order_by(Escalation.id)  # type: ignore[arg-type]
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def test_whistle_board_shows_who_reported_on_time_and_who_is_late(env: DispatchEnv) -> None:
    grid = env.place()
    ticket = await env.ticket(category="1306", grid=grid, content="路口交通事故引发纠纷")
    blown = await env.client.post(
        f"/tickets/{ticket}/whistle",
        json={
            "reason": "交通事故纠纷，需交警、司法所、街道到场",
            "summons": [
                {"department_code": "CITY-JJ"},
                {"department_code": f"TOWN-SFS-{grid[:9]}", "report_within_minutes": 10},
                {"department_code": f"TOWN-ZZ-{grid[:9]}"},
            ],
        },
        headers=CENTRE,
    )
    assert blown.status_code == 201, blown.text
    board = blown.json()
    assert board["counts"] == {"reported": 0, "reported_late": 0, "waiting": 3, "late": 0}
    rows = {r["department_code"]: r for r in board["summons"]}
    start = _at(board["blown_at"])
    assert _at(rows["CITY-JJ"]["report_due_at"]) == start + timedelta(minutes=30)
    assert _at(rows[f"TOWN-SFS-{grid[:9]}"]["report_due_at"]) == start + timedelta(minutes=10)

    _move_to(env, start + timedelta(minutes=5))
    on_time = await env.act(rows["CITY-JJ"]["dispatch_id"], "report", dept("CITY-JJ"))
    assert on_time["dispatch"]["status"] == "reported"
    _move_to(env, start + timedelta(minutes=40))
    late = await env.act(
        rows[f"TOWN-SFS-{grid[:9]}"]["dispatch_id"], "report", dept(f"TOWN-SFS-{grid[:9]}")
    )
    assert late["dispatch"]["status"] == "reported"

    board = (await env.client.get(f"/whistles/{board['whistle_id']}")).json()
    states = {r["department_code"]: (r["state"], r["late_by_seconds"]) for r in board["summons"]}
    assert states == {
        "CITY-JJ": ("reported", None),
        f"TOWN-SFS-{grid[:9]}": ("reported_late", 30 * 60),
        f"TOWN-ZZ-{grid[:9]}": ("late", 10 * 60),
    }
    assert board["counts"] == {"reported": 1, "reported_late": 1, "waiting": 0, "late": 1}
    events = await env.events(ticket)
    (whistle,) = [e for e in events if isinstance(e, WhistleBlown)]
    assert len(whistle.summons) == 3 and whistle.blown_by_role == "centre"
    reported = [e for e in events if isinstance(e, DepartmentReported)]
    assert [(e.department_code, e.on_time) for e in reported] == [
        ("CITY-JJ", True),
        (f"TOWN-SFS-{grid[:9]}", False),
    ]
    # The one still missing escalates like any missed clock.
    late_one = rows[f"TOWN-ZZ-{grid[:9]}"]["dispatch_id"]

    async def escalated() -> bool:
        return bool(await _escalations(env, late_one))

    await wait_until(escalated, what="the unreported summons to escalate")
    listed = await env.client.get(f"/tickets/{ticket}/whistles", headers=CENTRE)
    assert [w["whistle_id"] for w in listed.json()] == [board["whistle_id"]]


async def test_who_may_blow_the_whistle(env: DispatchEnv) -> None:
    grid = env.place()
    ticket = await env.ticket(category="0204", grid=grid)
    mine = await env.one(ticket)
    me = mine["department_code"]
    summons = {"reason": "需要城管到场", "summons": [{"department_code": f"DIST-ZF-{grid[:6]}"}]}
    worker = {"x-fengqiao-role": "grid_worker", "x-fengqiao-department": me}
    # A grid worker whose grid holds the ticket may; one from elsewhere may not.
    stranger = {
        "x-fengqiao-role": "grid_worker",
        "x-fengqiao-department": "GRID-WG-339921001001001",
    }
    refused = await env.client.post(f"/tickets/{ticket}/whistle", json=summons, headers=stranger)
    assert refused.status_code == 403
    # A department that has not signed for its dispatch may not; once it has, its dispatch
    # records the whistle.
    early = await env.client.post(f"/tickets/{ticket}/whistle", json=summons, headers=dept(me))
    assert early.status_code == 403 and "sign for it first" in early.json()["detail"]
    await env.act(mine["dispatch_id"], "sign-for", dept(me))
    by_department = await env.client.post(
        f"/tickets/{ticket}/whistle", json=summons, headers=dept(me)
    )
    assert by_department.status_code == 201, by_department.text
    assert (await env.detail(mine["dispatch_id"]))["actions"][-1]["action"] == "whistle"
    again = await env.client.post(f"/tickets/{ticket}/whistle", json=summons, headers=worker)
    assert again.status_code == 409  # summoned and not yet reported
    other = {"reason": "需要环保到场", "summons": [{"department_code": "CITY-HB"}]}
    by_worker = await env.client.post(f"/tickets/{ticket}/whistle", json=other, headers=worker)
    assert by_worker.status_code == 201
    hotline = {"x-fengqiao-role": "hotline"}
    assert (
        await env.client.post(f"/tickets/{ticket}/whistle", json=other, headers=hotline)
    ).status_code == 403
    unknown = await env.client.post(
        f"/tickets/{ticket}/whistle",
        json={"reason": "xx", "summons": [{"department_code": "CITY-NOPE"}]},
        headers=CENTRE,
    )
    assert unknown.status_code == 422 and "summons[0].department_code" in unknown.text
    assert (
        await env.client.post("/tickets/NOPE/whistle", json=other, headers=CENTRE)
    ).status_code == 404


async def test_a_missed_clock_escalates_up_the_tiers_once_per_step(env: DispatchEnv) -> None:
    grid = env.place()
    village, town = grid[:12], grid[:9]
    ticket = await env.ticket(category="0204", grid=grid)
    did = (await env.one(ticket))["dispatch_id"]
    sign_for = await _clock(env, did, "sign_for")
    _move_to(env, _at(sign_for["due_at"]) + timedelta(minutes=1))

    async def level(n: int) -> bool:
        return len(await _escalations(env, did)) >= n

    await wait_until(lambda: level(1), what="the first escalation")
    after_one = await _clock(env, did, "sign_for")
    assert after_one["escalation_level"] == 1 and after_one["state"] == "overdue"
    # Passes keep running; nothing more happens until the next step is due.
    for _ in range(3):
        await scheduler.run_pass(env.ctx, env.runtime.sessions)
    assert await _escalations(env, did) == [("sign_for", 1, f"VIL-JW-{village}")]
    _move_to(env, _at(after_one["next_escalation_at"]) + timedelta(minutes=1))
    await wait_until(lambda: level(2), what="the second escalation")
    for _ in range(2):
        await scheduler.run_pass(env.ctx, env.runtime.sessions)
    escalations = await _escalations(env, did)
    assert escalations[:2] == [
        ("sign_for", 1, f"VIL-JW-{village}"),
        ("sign_for", 2, f"TOWN-ZZ-{town}"),
    ]
    events = [e for e in await env.events(ticket) if isinstance(e, DispatchEscalated)]
    assert [(e.clock, e.level, e.target_department_code) for e in events][:2] == escalations[:2]
    assert (await env.one(ticket))["escalation_level"] >= 2
    # Signing for stops the clock: no further escalation of sign_for.
    await env.act(did, "sign-for", dept(f"GRID-WG-{grid}"))
    late = [e for e in await env.events(ticket) if e.event_type == "dispatch.dispatch.signed"]
    assert late[0].late is True  # type: ignore[attr-defined]
    listed = await env.client.get(
        "/escalations", params={"target": f"TOWN-ZZ-{town}"}, headers=CENTRE
    )
    assert did in [e["dispatch_id"] for e in listed.json()]
    assert {e["target_department_code"] for e in listed.json()} == {f"TOWN-ZZ-{town}"}


async def test_overdue_filter_and_the_overdue_clocks_of_an_inbox(env: DispatchEnv) -> None:
    grid = env.place()
    me = f"GRID-WG-{grid}"
    ticket = await env.ticket(category="0204", grid=grid)
    did = (await env.one(ticket))["dispatch_id"]
    await env.ticket(category="0204", grid=grid)
    overdue = (await env.client.get("/inbox", params={"overdue": "true"}, headers=dept(me))).json()
    assert overdue["total"] == 0
    _move_to(env, _at((await _clock(env, did, "sign_for"))["due_at"]) + timedelta(seconds=1))
    await env.act(did, "sign-for", dept(me))  # late, but no longer running
    later = await env.ticket(category="0204", grid=grid)
    overdue = (await env.client.get("/inbox", params={"overdue": "true"}, headers=dept(me))).json()
    assert overdue["total"] == 1 and overdue["items"][0]["overdue_clocks"] == ["sign_for"]
    on_time = (await env.client.get("/inbox", params={"overdue": "false"}, headers=dept(me))).json()
    assert {i["ticket_id"] for i in on_time["items"]} == {ticket, later}


async def test_nobody_grabs_in_time_so_it_is_assigned_and_supervised(env: DispatchEnv) -> None:
    ticket = await env.ticket(category="0102", grid="339902002001001", title="路灯不亮")
    pooled = await env.one(ticket)
    assert pooled["status"] == "pending_grab"
    _move_to(env, _at(pooled["grab_until"]) + timedelta(seconds=1))

    async def assigned() -> bool:
        return (await env.one(ticket))["status"] == "assigned"

    await wait_until(assigned, what="the grab window to run out")
    d = await env.one(ticket)
    assert (d["department_code"], d["mode"], d["supervised"]) == (
        "DIST-ZF-339902",
        "supervised",
        True,
    )
    (event,) = [e for e in await env.events(ticket) if isinstance(e, TicketAssigned)]
    assert event.mode == "supervised" and event.supervised
    clocks = (await env.detail(d["dispatch_id"]))["clocks"]
    assert {c["clock"] for c in clocks} == {"sign_for", "first_contact", "resolution"}
    grab = await env.act(d["dispatch_id"], "grab", dept("CITY-ZF"), expect=403)
    assert grab["detail"]


async def test_an_approved_extension_moves_the_escalation_with_the_deadline(
    env: DispatchEnv,
) -> None:
    grid = env.place()
    me = f"GRID-WG-{grid}"
    ticket = await env.ticket(category="0204", grid=grid)
    did = (await env.one(ticket))["dispatch_id"]
    await env.act(did, "sign-for", dept(me))
    await env.act(did, "contact", dept(me))
    await env.act(did, "extension", dept(me), {"working_days": 2, "reason": "等待配件"})
    await env.act(did, "extension/approve", CENTRE)
    resolution = await _clock(env, did, "resolution")
    original, moved = _at(resolution["original_due_at"]), _at(resolution["due_at"])
    assert moved > original
    _move_to(env, original + timedelta(hours=1))
    await scheduler.run_pass(env.ctx, env.runtime.sessions)
    assert await _escalations(env, did) == []
    _move_to(env, moved + timedelta(minutes=1))
    await scheduler.run_pass(env.ctx, env.runtime.sessions)
    assert [e[:2] for e in await _escalations(env, did)] == [("resolution", 1)]
    async with env.runtime.sessions() as session:
        total = (
            await session.execute(
                select(func.count()).select_from(Escalation).where(Escalation.dispatch_id == did)  # type: ignore[arg-type]
            )
        ).scalar_one()
    assert total == 1
