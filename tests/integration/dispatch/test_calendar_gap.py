"""A strict deployment (``beyond_data: raise``) meets the end of the calendar's data: an action
whose deadline lies beyond it answers 409 naming the gap, and the scheduler skips (logs, counts)
the steps it cannot time while every other step goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.dispatch.models import DispatchClock
from shared.clock import ManualClock
from shared.workcalendar import SHANGHAI
from tests.integration.dispatch.support import CENTRE, MONDAY, DispatchEnv, dept, running
from tests.support import open_database, wait_until

pytestmark = pytest.mark.timeout(90)

STRICT = "version: strict\nbeyond_data: raise\nholidays: []\nworkdays: []\ncomplete_years: []\n"
# Monday 21 December 2026, 10:00: a 5-working-day resolution clock ends on Monday 28 December,
# and its next escalation step, 5 working days later, in January 2027 — beyond the data.
DECEMBER = datetime(2026, 12, 21, 10, 0, tzinfo=SHANGHAI)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def strict(
    request: pytest.FixtureRequest, broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DispatchEnv]:
    """Dispatch on a calendar that refuses dates past its data, one scheduler step per pass."""
    overrides = tmp_path_factory.mktemp("calendar") / "calendar.yaml"
    overrides.write_text(STRICT, encoding="utf-8")
    database = await open_database(request.param, lambda: tmp_path_factory.mktemp("dispatch"))
    try:
        async with running(
            database,
            broker.bootstrap,
            clock=ManualClock(MONDAY),
            calendar_file=overrides,
            scheduler_batch_size=1,  # one step per pass: a skipped step must not hold the rest
        ) as env:
            env.bus = False
            yield env
    finally:
        await database.drop()


async def _skipped(env: DispatchEnv, step: str) -> float:
    metrics = (await env.client.get("/metrics")).text
    prefix = f'fengqiao_dispatch_scheduler_skipped_total{{step="{step}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_an_extension_beyond_the_calendar_is_409_naming_the_gap(strict: DispatchEnv) -> None:
    env = strict
    env.clock.set(MONDAY)
    grid = env.place()
    ticket = await env.ticket(category="0204", grid=grid)
    did, me = (await env.one(ticket))["dispatch_id"], f"GRID-WG-{grid}"
    await env.act(did, "sign-for", dept(me))
    await env.act(did, "extension", dept(me), {"working_days": 30, "reason": "需要协调多个部门"})
    refused = await env.act(did, "extension/approve", CENTRE, expect=409)
    assert "no official calendar data for 2027-01-01" in refused["detail"]
    assert "calendar" in refused["detail"]
    # Nothing of the approval was kept: the centre can still deny it.
    detail = await env.detail(did)
    assert detail["status"] == "extension_requested"
    assert detail["extensions"][0]["status"] == "pending"
    denied = await env.act(did, "extension/deny", CENTRE)
    assert denied["dispatch"]["status"] == "signed"


async def test_the_scheduler_skips_a_clock_it_cannot_time_and_escalates_the_others(
    strict: DispatchEnv,
) -> None:
    env = strict
    env.clock.set(DECEMBER)
    stuck = (await env.one(await env.ticket(category="0204", grid=env.place())))["dispatch_id"]
    # A pooled ticket whose assignment, when its grab window runs out, needs 2027 deadlines.
    pooled = await env.ticket(category="0101", grid="339902001002001", title="路灯不亮")
    pooled_id = (await env.one(pooled))["dispatch_id"]
    assert (await env.one(pooled))["status"] == "pending_grab"
    # A second dispatch whose sign-for clock runs out a minute after the resolution clocks:
    # behind both of them in the queue, with one step per pass (batch size 1).
    behind = (await env.one(await env.ticket(category="0204", grid=env.place())))["dispatch_id"]
    late = datetime(2026, 12, 28, 17, 31, tzinfo=SHANGHAI)
    async with env.runtime.sessions() as session, session.begin():
        clock = await session.get(DispatchClock, (behind, "sign_for"))
        assert clock is not None
        clock.due_at = clock.next_escalation_at = late
    # Past them all: the resolution clocks' next escalation steps would be in January 2027.
    env.clock.set(late + timedelta(minutes=1))

    async def levels(dispatch_id: str) -> dict[str, int]:
        async with env.runtime.sessions() as session:
            rows = await session.execute(
                select(DispatchClock).where(DispatchClock.dispatch_id == dispatch_id)  # type: ignore[arg-type]
            )
            return {c.clock: c.escalation_level for c in rows.scalars()}

    async def others_escalated() -> bool:
        first, second = await levels(stuck), await levels(behind)
        return first["sign_for"] >= 1 and first["first_contact"] >= 1 and second["sign_for"] >= 1

    await wait_until(others_escalated, timeout=20, what="the other clocks to escalate")

    async def counted() -> bool:
        return await _skipped(env, "escalate") > 0 and await _skipped(env, "assign") > 0

    await wait_until(counted, timeout=20, what="the skipped steps to be counted")
    assert (await levels(stuck))["resolution"] == 0  # skipped, not lost: retried every pass
    assert (await env.detail(pooled_id))["status"] == "pending_grab"
    # Grabbing it needs the same deadlines: refused with the reason, not a 500.
    refused = await env.act(pooled_id, "grab", dept("CITY-ZF"), expect=409)
    assert "no official calendar data" in refused["detail"]
    env.clock.set(MONDAY)
