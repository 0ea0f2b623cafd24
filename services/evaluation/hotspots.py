"""Hot spots and seasons (治未病): where appeals of one category gather, before the next wave.

Per leaf category × town (appeals received, from the ``month_category`` roll-up: a row per leaf
category, town and month):

- **spike**: this period's count against the trailing baseline λ (the mean of the three
  periods before it, at least 0.5). Test: one-sided Poisson, P(X ≥ observed | λ) < α
  (``EVALUATION_HOTSPOT_ALPHA``, default 0.01), and at least ``hotspot_min_count`` appeals.
  The same count against the same period of up to three earlier years is shown beside it.
- **season**: the period two months ahead was a spike (same test, against that year's own
  trailing baseline) in at least two earlier years: act before it comes.
- **recurring place**: a grid with at least ``recurring_min_count`` appeals of one category in
  the period (the ``month_place`` roll-up: a row per leaf category, grid and month).

Every spike and season becomes a proactive-work proposal (``ProactiveWorkProposed``), emitted
once per category, town and period through the outbox; dispatch opens a proactive dispatch
(未诉先办) to the owning department on its own line, counted apart from appeals.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from scipy.stats import poisson
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.evaluation.models import cells_table, proposals_table
from services.evaluation.periods import Period, add_months, period_of
from services.evaluation.queries import PeriodOut, label, period_out
from services.evaluation.settings import EvaluationSettings
from shared.events.evaluation import ProactiveWorkProposed
from shared.outbox import Outbox

TRAILING = 3
YEARS_BACK = 3
LEAD_MONTHS = 2
MIN_LAMBDA = 0.5


class Spot(BaseModel):
    kind: Literal["spike", "season"]
    category_code: str
    category_zh: str | None = None
    area_code: str
    area_zh: str | None = None
    period: str
    observed: int
    expected: float
    same_period_earlier_years: list[int]
    p_value: float
    test: str
    proposal_id: str
    reason: str
    act_by: date


class Place(BaseModel):
    grid_code: str
    grid_zh: str | None = None
    category_code: str
    appeals: int


class HotSpots(BaseModel):
    period: PeriodOut
    alpha: float
    spots: list[Spot]
    recurring_places: list[Place]


Counts = dict[tuple[str, str], dict[date, int]]


async def _monthly(engine: AsyncEngine, first: date, end: date) -> Counts:
    """Appeals received per (category, town) per month."""
    c = cells_table.c
    query = (
        select(c.category_code, c.town_code, c.period_start, func.sum(c.received))
        .where(
            and_(
                c.grain == "month_category",
                c.kind == "appeal",
                c.period_start >= first,
                c.period_start < end,
                c.town_code != "",
                c.category_code != "",
            )
        )
        .group_by(c.category_code, c.town_code, c.period_start)
    )
    counts: Counts = defaultdict(dict)
    async with engine.connect() as conn:
        for category, town, month, n in await conn.execute(query):
            counts[category, town][month] = int(n)
    return counts


def _window(counts: dict[date, int], start: date, months: int) -> int:
    return sum(counts.get(add_months(start, i), 0) for i in range(months))


def _test(observed: int, expected: float) -> float:
    """One-sided Poisson: P(X ≥ observed | λ = expected)."""
    return float(poisson.sf(observed - 1, max(expected, MIN_LAMBDA)))


def _trailing(counts: dict[date, int], start: date, months: int) -> float:
    return (
        sum(_window(counts, add_months(start, -months * k), months) for k in range(1, TRAILING + 1))
        / TRAILING
    )


async def find(engine: AsyncEngine, *, period: Period, settings: EvaluationSettings) -> HotSpots:
    """The hot spots of a month or quarter."""
    months = 3 if period.kind == "quarter" else 1
    first = add_months(period.start, -12 * YEARS_BACK - months * TRAILING)
    counts = await _monthly(engine, first, add_months(period.start, months + LEAD_MONTHS))
    alpha, minimum = settings.hotspot_alpha, settings.hotspot_min_count
    test_name = f"one-sided Poisson P(X≥observed|λ) < {alpha:g}, observed ≥ {minimum}"
    spots: list[Spot] = []
    for (category, town), series in sorted(counts.items()):
        observed = _window(series, period.start, months)
        earlier = [
            _window(series, add_months(period.start, -12 * y), months)
            for y in range(1, YEARS_BACK + 1)
        ]
        expected = _trailing(series, period.start, months)
        p = _test(observed, expected)
        category_zh, _ = label("category", category)
        town_zh, _ = label("town", town)
        if observed >= minimum and p < alpha:
            spots.append(
                Spot(
                    kind="spike",
                    category_code=category,
                    category_zh=category_zh,
                    area_code=town,
                    area_zh=town_zh,
                    period=period.label(),
                    observed=observed,
                    expected=round(expected, 3),
                    same_period_earlier_years=earlier,
                    p_value=round(p, 6),
                    test=test_name,
                    proposal_id=f"HS-{period.label()}-{category}-{town}-spike",
                    reason=f"{category_zh or category} appeals in {town_zh or town}: {observed} in "
                    f"{period.label()} against {expected:.1f} expected; act now",
                    act_by=period.end + timedelta(days=14),
                )
            )
        ahead = add_months(period.start, LEAD_MONTHS)
        peaks = []
        for y in range(1, YEARS_BACK + 1):
            then = add_months(ahead, -12 * y)
            seen = _window(series, then, months)
            if seen >= minimum and _test(seen, _trailing(series, then, months)) < alpha:
                peaks.append((then.year, seen))
        if len(peaks) >= 2:
            label_ahead = period_of(period.kind, ahead).label()
            mean = sum(n for _, n in peaks) / len(peaks)
            spots.append(
                Spot(
                    kind="season",
                    category_code=category,
                    category_zh=category_zh,
                    area_code=town,
                    area_zh=town_zh,
                    period=label_ahead,
                    observed=round(mean),
                    expected=round(_trailing(series, ahead, months), 3),
                    same_period_earlier_years=[n for _, n in peaks],
                    p_value=0.0,
                    test=test_name,
                    proposal_id=f"HS-{label_ahead}-{category}-{town}-season",
                    reason=f"{category_zh or category} appeals in {town_zh or town} peaked in "
                    f"{', '.join(str(y) for y, _ in peaks)} at this time of year; act before "
                    f"{label_ahead}",
                    act_by=ahead - timedelta(days=1),
                )
            )
    places = await _places(engine, period, settings.recurring_min_count)
    return HotSpots(period=period_out(period), alpha=alpha, spots=spots, recurring_places=places)


async def _places(engine: AsyncEngine, period: Period, minimum: int) -> list[Place]:
    c = cells_table.c
    total = func.sum(c.received)
    query = (
        select(c.grid_code, c.category_code, total)
        .where(
            and_(
                c.grain == "month_place",
                c.kind == "appeal",
                c.period_start >= period.start,
                c.period_start < period.end,
                c.grid_code != "",
            )
        )
        .group_by(c.grid_code, c.category_code)
        .having(total >= minimum)
        .order_by(total.desc(), c.grid_code)
        .limit(100)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        Place(grid_code=g, grid_zh=label("grid", g)[0], category_code=cat, appeals=int(n))
        for g, cat, n in rows
    ]


def table(found: HotSpots) -> tuple[list[str], list[list[Any]]]:
    """The hot spots as one flat table (recurring places after the spots)."""
    header = [
        "kind",
        "category_code",
        "area_code",
        "period",
        "observed",
        "expected",
        "same_period_earlier_years",
        "p_value",
        "act_by",
        "reason",
    ]
    rows: list[list[Any]] = [
        [
            s.kind,
            s.category_code,
            s.area_code,
            s.period,
            s.observed,
            s.expected,
            " ".join(map(str, s.same_period_earlier_years)),
            s.p_value,
            s.act_by,
            s.reason,
        ]
        for s in found.spots
    ]
    rows += [
        [
            "recurring_place",
            p.category_code,
            p.grid_code,
            found.period.label,
            p.appeals,
            None,
            None,
            None,
            None,
            None,
        ]
        for p in found.recurring_places
    ]
    return header, rows


async def propose(*, session: AsyncSession, outbox: Outbox, found: HotSpots, now: Any) -> int:
    """Emit each spot's proposal once (``eval_proposals`` remembers); returns how many."""
    emitted = 0
    for spot in found.spots:
        known = await session.execute(
            select(proposals_table.c.proposal_id).where(
                proposals_table.c.proposal_id == spot.proposal_id
            )
        )
        if known.first() is not None:
            continue
        await session.execute(
            proposals_table.insert().values(
                proposal_id=spot.proposal_id,
                category_code=spot.category_code,
                area_code=spot.area_code,
                period_start=found.period.start,
                emitted_at=now,
            )
        )
        await outbox.add(
            session,
            ProactiveWorkProposed(
                proposal_id=spot.proposal_id,
                category_code=spot.category_code,
                area_code=spot.area_code,
                reason=spot.reason,
                act_by=spot.act_by,
                observed=spot.observed,
                expected=spot.expected,
                test=f"{spot.test}; p={spot.p_value:g}",
            ),
        )
        emitted += 1
    return emitted
