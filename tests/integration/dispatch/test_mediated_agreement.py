"""A mediated agreement completes every open dispatch of its ticket, whatever its status: a
pending return or extension request is decided as moot, an unsigned dispatch is signed for on the
way, each step with the event it always has; a completion past the deadline is late; a dispatch
still in the grab pool is withdrawn."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.events.dispatch import (
    DispatchCompleted,
    DispatchSigned,
    DispatchWithdrawn,
    ExtensionDecided,
    ReturnDecided,
)
from shared.events.mediation import AgreementReached
from tests.integration.dispatch.support import MONDAY, DispatchEnv, dept
from tests.support import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def _tickets_through_the_handler(env: DispatchEnv) -> None:
    """Tickets skip the intake topic; the agreement itself comes over the bus."""
    env.bus = False


async def _mediation_ticket(env: DispatchEnv) -> tuple[str, str, str]:
    ticket = await env.ticket(category="1302", grid=env.place(), content="两户因排水问题发生纠纷")
    d = await env.one(ticket)
    assert d["handling_line"] == "mediation" and d["status"] == "assigned"
    return ticket, d["dispatch_id"], d["department_code"]


async def _agree(env: DispatchEnv, ticket: str, status: str = "completed") -> dict[str, Any]:
    case = f"M-{ticket}"
    await env.mediation_event(
        AgreementReached(case_id=case, ticket_id=ticket, kind="written", summary="双方签订协议")
    )

    async def closed() -> bool:
        return (await env.one(ticket))["status"] == status

    await wait_until(closed, timeout=20, what=f"the agreement to leave the dispatch {status}")
    return await env.one(ticket)


async def test_a_return_asked_before_signing_is_moot_and_the_dispatch_signed_and_completed(
    env: DispatchEnv,
) -> None:
    ticket, did, me = await _mediation_ticket(env)
    asked = await env.act(did, "return", dept(me), {"reason": "不属于本单位职责"})
    assert asked["dispatch"]["status"] == "return_requested"
    await _agree(env, ticket)
    detail = await env.detail(did)
    assert [(a["action"], a["from_status"], a["to_status"]) for a in detail["actions"]] == [
        ("assign", None, "assigned"),
        ("return_request", "assigned", "return_requested"),
        ("return_deny", "return_requested", "assigned"),
        ("sign_for", "assigned", "signed"),
        ("complete", "signed", "completed"),
    ]
    assert detail["actions"][2:]
    assert all(a["actor_subject"] == f"mediation:M-{ticket}" for a in detail["actions"][2:])
    assert {c["clock"]: c["state"] for c in detail["clocks"]}["sign_for"] == "stopped"
    events = await env.events(ticket)
    types = [e.event_type for e in events]
    assert types[-3:] == [
        "dispatch.return.decided",
        "dispatch.dispatch.signed",
        "dispatch.dispatch.completed",
    ]
    (decided,) = [e for e in events if isinstance(e, ReturnDecided)]
    assert not decided.approved and decided.note is not None and "moot" in decided.note
    assert decided.rerouted_to == ()
    (signed,) = [e for e in events if isinstance(e, DispatchSigned)]
    assert signed.dispatch_id == did and not signed.late
    (completed,) = [e for e in events if isinstance(e, DispatchCompleted)]
    assert completed.via == "mediation" and completed.resolved and not completed.late


async def test_a_pending_extension_is_decided_moot_with_its_time_and_reason(
    env: DispatchEnv,
) -> None:
    ticket, did, me = await _mediation_ticket(env)
    await env.act(did, "sign-for", dept(me))
    await env.act(did, "extension", dept(me), {"working_days": 5, "reason": "等待调解结果"})
    before = {c["clock"]: c for c in (await env.detail(did))["clocks"]}["resolution"]
    await _agree(env, ticket)
    detail = await env.detail(did)
    (request,) = detail["extensions"]
    assert request["status"] == "moot"
    assert request["decided_by"] == f"mediation:M-{ticket}"
    assert request["decided_at"] is not None and "moot" in request["decision_note"]
    assert request["old_due_at"] == before["due_at"] and request["new_due_at"] is None
    resolution = {c["clock"]: c for c in detail["clocks"]}["resolution"]
    assert resolution["due_at"] == before["due_at"] and resolution["state"] == "stopped"
    events = await env.events(ticket)
    (decided,) = [e for e in events if isinstance(e, ExtensionDecided)]
    assert not decided.approved and decided.new_due_at is None and "moot" in (decided.note or "")
    assert decided.request_id == request["id"]
    assert [e.event_type for e in events][-2:] == [
        "dispatch.extension.decided",
        "dispatch.dispatch.completed",
    ]


async def test_a_pooled_dispatch_is_withdrawn_by_the_agreement(env: DispatchEnv) -> None:
    ticket = await env.ticket(category="0101", grid="339902001002001", title="人行道塌陷")
    assert (await env.one(ticket))["status"] == "pending_grab"
    withdrawn = await _agree(env, ticket, status="withdrawn")
    assert withdrawn["closed_at"] is not None
    (event,) = [e for e in await env.events(ticket) if isinstance(e, DispatchWithdrawn)]
    assert "moot" in event.reason


async def test_a_completion_past_the_deadline_is_late(env: DispatchEnv) -> None:
    ticket, did, _ = await _mediation_ticket(env)
    try:
        # Past every clock: the sign-for step and the completion both come late.
        env.clock.advance(timedelta(days=30))
        await _agree(env, ticket)
    finally:
        env.clock.set(MONDAY)
    events = await env.events(ticket)
    (signed,) = [e for e in events if isinstance(e, DispatchSigned)]
    (completed,) = [e for e in events if isinstance(e, DispatchCompleted)]
    assert signed.late and completed.late
    clocks = {c["clock"]: c["state"] for c in (await env.detail(did))["clocks"]}
    assert clocks["sign_for"] == clocks["resolution"] == "stopped_late"
