"""A restart in the middle of a pending escalation still escalates exactly once.

The service stops with a clock still running; time moves past its deadline while nothing runs;
the service starts again and escalates, once; then a second replica races it for the next
step, which also happens once — the state was in the database all along, and each step is
claimed by a conditional update backed by a unique key.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines import scheduler
from services.dispatch.models import Escalation
from shared import db
from shared.bus import create_topics
from shared.clock import ManualClock
from shared.events.dispatch import DispatchEscalated
from tests.integration.dispatch.support import MONDAY, running, start
from tests.support import Database, wait_until

pytestmark = pytest.mark.timeout(90)


async def _escalations(env: Any, dispatch_id: str) -> list[tuple[str, int]]:
    async with env.runtime.sessions() as session:
        rows = await session.execute(
            select(Escalation.clock, Escalation.level).where(
                Escalation.dispatch_id == dispatch_id  # type: ignore[arg-type]
            )
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def test_restart_mid_escalation_escalates_exactly_once(
    broker: Any, database: Database
) -> None:
    clock = ManualClock(MONDAY)
    grid = "339903001001001"
    async with running(database, broker.bootstrap, clock=clock) as first:
        ticket = await first.ticket(category="0204", grid=grid)
        (d,) = await first.dispatches(ticket)
        clocks = {c["clock"]: c for c in (await first.detail(d["dispatch_id"]))["clocks"]}
        due = _at(clocks["sign_for"]["due_at"])
        settings = first.settings
    # Nothing runs while the deadline passes.
    clock.set(due + timedelta(minutes=5))
    # The restarted process talks to fresh topics, so its consumer does not wait out the old
    # member's session; the database — the only state that matters here — is the same.
    settings = settings.model_copy(update={"kafka_topic_prefix": f"{settings.kafka_topic_prefix}r"})
    await create_topics(settings)
    async with start(settings, clock) as again:
        did = d["dispatch_id"]

        async def escalated() -> bool:
            return bool(await _escalations(again, did))

        await wait_until(escalated, what="the escalation after the restart")
        for _ in range(3):  # later passes find nothing more to do
            await scheduler.run_pass(again.ctx, again.runtime.sessions)
        assert await _escalations(again, did) == [("sign_for", 1)]

        # A second replica on the same database races the running one for the next step.
        engine = db.create_engine(settings)
        try:
            replica = DispatchContext(settings, clock=clock)
            sessions = db.session_factory(engine)
            step = (await again.detail(did))["clocks"]
            next_at = _at({c["clock"]: c for c in step}["sign_for"]["next_escalation_at"])
            clock.set(next_at + timedelta(minutes=1))
            await asyncio.gather(
                scheduler.run_pass(replica, sessions),
                scheduler.run_pass(again.ctx, again.runtime.sessions),
                scheduler.run_pass(replica, sessions),
            )
        finally:
            await engine.dispose()
        assert sorted(await _escalations(again, did)) == [("sign_for", 1), ("sign_for", 2)]
        events = [e for e in await again.events(ticket) if isinstance(e, DispatchEscalated)]
        assert [(e.clock, e.level, e.target_department_code) for e in events] == [
            ("sign_for", 1, "VIL-JW-339903001001"),
            ("sign_for", 2, "TOWN-ZZ-339903001"),
        ]
        detail = await again.detail(did)
        assert detail["escalation_level"] == 2
        assert [a["action"] for a in detail["actions"]] == ["assign", "escalate", "escalate"]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
