"""A failed mediation closes the ticket's mediation dispatch as failed (completed, not resolved,
via mediation) and sends the ticket where the referral says: litigation or arbitration guidance
to the judicial line, legal aid to the aid line, anything else by the active rules without the
mediation line — each new dispatch announced like any re-route, so intake and evaluation follow."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events.dispatch import DispatchCompleted, TicketAssigned
from shared.events.mediation import MediationFailed, Referral
from tests.integration.dispatch.support import DispatchEnv, dept

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def _tickets_through_the_handler(env: DispatchEnv) -> None:
    """Tickets skip the intake topic; the failure itself comes over the bus."""
    env.bus = False


async def _failed(
    env: DispatchEnv, referral: Referral, **ticket_facts: Any
) -> tuple[str, str, dict[str, str]]:
    """A mediation ticket whose mediation failed with ``referral``: the ticket, the closed
    mediation dispatch's id, and the area codes around its grid."""
    grid = env.place()
    ticket = await env.ticket(
        category="1301", grid=grid, content="邻里因噪音发生纠纷", **ticket_facts
    )
    mediation = await env.one(ticket)
    assert mediation["handling_line"] == "mediation"
    failed = MediationFailed(
        case_id=f"M-{ticket}", ticket_id=ticket, reason="双方拒绝让步", referral=referral
    )
    await env.mediation_event(failed)
    await env.handled(failed)
    codes = {"grid": grid, "village": grid[:12], "town": grid[:9]}
    return ticket, mediation["dispatch_id"], codes


async def _after(env: DispatchEnv, ticket: str, closed: str) -> dict[str, str]:
    """Check the closed dispatch and its events; the one new dispatch."""
    dispatches = {d["dispatch_id"]: d for d in await env.dispatches(ticket)}
    old = dispatches.pop(closed)
    assert old["status"] == "completed" and old["resolved"] is False
    assert "调解未达成协议" in old["result"]
    (new,) = dispatches.values()
    assert new["mode"] == "reroute" and new["status"] == "assigned"
    events = await env.events(ticket)
    completions = [e for e in events if isinstance(e, DispatchCompleted)]
    assert [(c.dispatch_id, c.resolved, c.via) for c in completions] == [
        (closed, False, "mediation")
    ]
    assigned = [e for e in events if isinstance(e, TicketAssigned) and e.mode == "reroute"]
    assert [(a.dispatch_id, a.parent_dispatch_id) for a in assigned] == [
        (new["dispatch_id"], closed)
    ]
    return new


@pytest.mark.parametrize(
    ("referral", "line", "department"),
    [
        ("litigation", "judicial", "TOWN-SFS-{town}"),
        ("arbitration", "judicial", "TOWN-SFS-{town}"),
        ("legal_aid", "aid", "TOWN-SWB-{town}"),
    ],
)
async def test_a_referral_sends_the_ticket_to_its_line(
    env: DispatchEnv, referral: Referral, line: str, department: str
) -> None:
    ticket, closed, codes = await _failed(env, referral)
    new = await _after(env, ticket, closed)
    assert new["handling_line"] == line
    assert new["department_code"] == department.format(**codes)


async def test_no_referral_reroutes_by_the_rules_without_the_mediation_line(
    env: DispatchEnv,
) -> None:
    # An enterprise's dispute: without the mediation rule, the 2115 rule places it.
    ticket, closed, _ = await _failed(env, "none", is_enterprise=True)
    new = await _after(env, ticket, closed)
    assert new["handling_line"] == "normal" and new["rule_id"] == "enterprise-2115"
    assert new["time_limit_profile"] == "enterprise_2115"


async def test_no_rule_left_for_the_dispute_sends_it_to_the_supervised_pool(
    env: DispatchEnv,
) -> None:
    # Only the mediation rule takes disputes: without it, the centre places the ticket by hand.
    ticket, closed, _ = await _failed(env, "administrative")
    new = await _after(env, ticket, closed)
    assert new["handling_line"] == "supervised_pool" and new["rule_id"] is None
    assert new["department_code"] == "CITY-12345" and new["supervised"] is True


async def test_a_signed_mediation_dispatch_closes_and_a_repeated_failure_changes_nothing(
    env: DispatchEnv,
) -> None:
    grid = env.place()
    ticket = await env.ticket(category="1301", grid=grid, content="两户因排水问题发生纠纷")
    mediation = await env.one(ticket)
    await env.act(mediation["dispatch_id"], "sign-for", dept(mediation["department_code"]))
    for attempt in range(2):  # the second failure (a new event) finds no mediation dispatch open
        failed = MediationFailed(case_id=f"M-{ticket}", ticket_id=ticket, reason="调解失败")
        await env.mediation_event(failed)
        await env.handled(failed)
        dispatches = await env.dispatches(ticket)
        assert len(dispatches) == 2, attempt
    new = await _after(env, ticket, mediation["dispatch_id"])
    assert new["handling_line"] != "mediation"


async def test_a_walk_in_failure_touches_no_dispatch(env: DispatchEnv) -> None:
    failed = MediationFailed(case_id="M-WALKIN-1", reason="未达成协议", referral="litigation")
    await env.mediation_event(failed)
    await env.handled(failed)
