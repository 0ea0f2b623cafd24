"""Hot spots (治未病): a spike against the trailing baseline, a seasonal peak seen in earlier
years two months ahead, a recurring place, and proposals emitted once through the outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from services.evaluation import hotspots
from shared.events import intake as i
from shared.events.base import Event
from shared.events.evaluation import ProactiveWorkProposed
from shared.workcalendar import SHANGHAI
from tests.integration.evaluation.committee_fixture import BEIHAI, BH1, TASHAN, TS1
from tests.integration.evaluation.support import COMMITTEE, EvaluationEnv


def appeals(
    env: EvaluationEnv, n: int, year: int, month: int, grid: str, category: str
) -> list[Event]:
    return [
        i.TicketReceived(
            ticket_id=env.ticket_id(),
            channel="hotline-12345-phone",
            received_at=datetime(year, month, 1 + k % 20, 10, tzinfo=SHANGHAI),
            occurred_at=datetime(year, month, 1 + k % 20, 10, tzinfo=SHANGHAI),
            title="t",
            content="c",
            category_code=category,
            location=i.Location(grid_code=grid),
        )
        for k in range(n)
    ]


async def test_spikes_seasons_places_and_proposals(env: EvaluationEnv) -> None:
    events: list[Event] = []
    # Drainage (0104) in Beihai: one a month, twelve every June of 2024 and 2025.
    for year in (2024, 2025):
        for month in range(1, 13):
            events += appeals(env, 12 if month == 6 else 1, year, month, BH1, "0104")
    for month in range(1, 5):
        events += appeals(env, 1, 2026, month, BH1, "0104")
    # Water supply (0103) in Tashan: one a month, then ten in April 2026.
    for month in range(1, 4):
        events += appeals(env, 1, 2026, month, TS1, "0103")
    events += appeals(env, 10, 2026, 4, TS1, "0103")
    await env.fold(*events)

    response = await env.client.get(
        "/hotspots", params={"period": "month", "on": "2026-04-10"}, headers=COMMITTEE
    )
    assert response.status_code == 200, response.text
    found = hotspots.HotSpots.model_validate(response.json())
    spots = {(s.kind, s.category_code, s.area_code): s for s in found.spots}
    assert set(spots) == {("spike", "0103", TASHAN), ("season", "0104", BEIHAI)}
    spike = spots["spike", "0103", TASHAN]
    assert (spike.observed, spike.expected) == (10, 1.0)  # against Jan–Mar: 1 a month
    assert spike.p_value < 0.01 and "Poisson" in spike.test
    season = spots["season", "0104", BEIHAI]
    assert season.period == "2026-06" and season.same_period_earlier_years == [12, 12]
    assert str(season.act_by) == "2026-05-31"
    assert [(p.grid_code, p.category_code, p.appeals) for p in found.recurring_places] == [
        (TS1, "0103", 10),
    ]

    ctx = env.runtime.context
    for expected in (2, 0):  # the second pass finds them already proposed
        async with env.runtime.sessions() as session, session.begin():
            emitted = await hotspots.propose(
                session=session, outbox=ctx.outbox, found=found, now=ctx.now()
            )
        assert emitted == expected
    outbox = env.runtime.outbox_table
    async with env.runtime.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(outbox.c.event_type == ProactiveWorkProposed.event_type)
        )
    assert count == 2
