"""未诉先办: evaluation's proposal becomes a proactive dispatch to the department that owns the
category in the area, on the proactive line and channel (counted apart from appeals), under the
proposal's own id; a proposal delivered twice is placed once."""

from __future__ import annotations

import uuid

import pytest

from services.dispatch.rules import HandlingLine
from shared.events import EVALUATION_TOPIC
from shared.events.dispatch import TicketAssigned
from shared.events.evaluation import ProactiveWorkProposed
from tests.integration.dispatch.support import CENTRE, DispatchEnv, dept

pytestmark = pytest.mark.timeout(90)


def _proposal(area: str, proposal_id: str | None = None) -> ProactiveWorkProposed:
    return ProactiveWorkProposed(
        proposal_id=proposal_id or f"PW-{uuid.uuid4().hex[:12]}",
        category_code="0204",
        area_code=area,
        reason="近四周垃圾清运诉求显著高于基线",
        observed=14,
        expected=3.5,
        test="poisson",
    )


async def _propose(env: DispatchEnv, proposal: ProactiveWorkProposed) -> None:
    await env.publish(EVALUATION_TOPIC, proposal)
    await env.handled(proposal)


async def test_a_proposal_becomes_a_proactive_dispatch_to_the_owner(env: DispatchEnv) -> None:
    grid = env.place()
    proposal = _proposal(grid)
    await _propose(env, proposal)
    ticket = f"P-{proposal.proposal_id}"
    d = await env.one(ticket)
    assert d["handling_line"] == HandlingLine.PROACTIVE.value
    assert d["channel"] == "proactive"
    assert d["department_code"] == f"GRID-WG-{grid}"
    assert d["status"] == "assigned" and d["supervised"] is False
    (assigned,) = [e for e in await env.events(ticket) if isinstance(e, TicketAssigned)]
    assert assigned.handling_line == "proactive" and assigned.ticket_id == ticket
    # The department works it like any dispatch; its inbox can show proactive work alone.
    await env.act(d["dispatch_id"], "sign-for", dept(d["department_code"]))
    inbox = await env.client.get(
        "/inbox", params={"line": "proactive"}, headers=dept(d["department_code"])
    )
    assert inbox.status_code == 200, inbox.text
    items = inbox.json()["items"]
    assert items
    assert {i["handling_line"] for i in items} == {"proactive"}


async def test_a_proposal_delivered_twice_is_placed_once(env: DispatchEnv) -> None:
    first = _proposal(env.place())
    await _propose(env, first)
    again = _proposal(first.area_code, first.proposal_id)  # a new event, the same proposal
    await _propose(env, again)
    dispatches = await env.dispatches(f"P-{first.proposal_id}")
    assert len(dispatches) == 1


async def test_proactive_work_is_counted_apart_from_appeals(env: DispatchEnv) -> None:
    assert env.ctx.metrics is not None
    before = env.ctx.metrics.proactive._value.get()
    await _propose(env, _proposal(env.place()))
    assert env.ctx.metrics.proactive._value.get() == before + 1


async def test_a_returned_proposal_stays_proactive_work(env: DispatchEnv) -> None:
    proposal = _proposal(env.place())
    await _propose(env, proposal)
    d = await env.one(f"P-{proposal.proposal_id}")
    mine = d["department_code"]
    await env.act(d["dispatch_id"], "return", dept(mine), {"reason": "不属于本网格职责"})
    approved = await env.act(d["dispatch_id"], "return/approve", CENTRE)
    (again,) = approved["created"]
    assert again["handling_line"] == "proactive" and again["mode"] == "reroute"
    assert again["department_code"] != mine
