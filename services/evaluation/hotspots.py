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

import asyncio
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel
from scipy.stats import poisson
from sqlalchemy import ColumnElement, Integer, and_, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.evaluation.models import cells_table, proposals_table
from services.evaluation.periods import Period, add_months, period_of
from services.evaluation.queries import PeriodOut, label, period_out
from services.evaluation.settings import EvaluationSettings
from shared.events.evaluation import ProactiveWorkProposed
from shared.outbox import Outbox

TRAILING = 3
# Inline, not bound: a prepared statement's generic plan cannot prove a bound grain matches the
# partial indexes these reads are served from, and would read the wide rows instead. Both read
# ``spot_received`` (``received`` on these grains), which those indexes hold.
_MONTH_CATEGORY: ColumnElement[str] = literal_column("'month_category'")
_MONTH_PLACE: ColumnElement[str] = literal_column("'month_place'")
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


@dataclass(frozen=True)
class Counts:
    """Appeals received per (category, town) and window: a row per pair, a column per window."""

    keys: list[tuple[str, str]]
    windows: dict[date, int]  # window start → column
    table: Any  # numpy int64 array, len(keys) × len(windows)

    def at(self, row: int, start: date) -> int:
        column = self.windows.get(start)
        return 0 if column is None else int(self.table[row, column])


async def _windows(engine: AsyncEngine, starts: set[date], months: int) -> Counts:
    """Appeals received per (category, town) in each window of ``months`` from ``starts``,
    summed by the database (a row per category and town, a column per window). Only the months
    the windows cover are read; a one-month window is one equality per row, not a range."""
    c = cells_table.c
    windows = sorted(starts)
    covered = sorted({add_months(w, k) for w in windows for k in range(months)})
    # ``received`` as an integer: a sum of integers comes back as a bigint, where a sum of
    # bigints comes back as numeric (slower to sum, then cast); a category's appeals in one town
    # and month stay far below 2³¹.
    received = cast(c.spot_received, Integer)
    sums = [
        func.coalesce(
            func.sum(received).filter(
                c.period_start == w
                if months == 1
                else and_(c.period_start >= w, c.period_start < add_months(w, months))
            ),
            0,
        )
        for w in windows
    ]
    query = (
        select(c.category_code, c.town_code, *sums)
        .where(
            and_(
                c.grain == _MONTH_CATEGORY,
                c.kind == "appeal",
                c.period_start.in_(covered),
                c.town_code != "",
                c.category_code != "",
            )
        )
        .group_by(c.category_code, c.town_code)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return Counts(
        keys=[(category, town) for category, town, *_ in rows],
        windows={w: k for k, w in enumerate(windows)},
        table=np.array([row[2:] for row in rows], dtype=np.int64).reshape(len(rows), len(windows)),
    )


async def find(engine: AsyncEngine, *, period: Period, settings: EvaluationSettings) -> HotSpots:
    """The hot spots of a month or quarter."""
    months = 3 if period.kind == "quarter" else 1
    ahead = add_months(period.start, LEAD_MONTHS)
    # the period and the same period two months ahead in earlier years: tested
    starts = [period.start] + [add_months(ahead, -12 * y) for y in range(1, YEARS_BACK + 1)]
    # ... each against its trailing windows; the period's earlier years and what lies ahead shown
    shown = [ahead] + [add_months(period.start, -12 * y) for y in range(1, YEARS_BACK + 1)]
    windows = {add_months(s, -months * k) for s in (*starts, ahead) for k in range(TRAILING + 1)}
    # the two reads on two connections at once
    counts, places = await asyncio.gather(
        _windows(engine, windows | set(shown), months),
        _places(engine, period, settings.recurring_min_count),
    )
    alpha, minimum = settings.hotspot_alpha, settings.hotspot_min_count
    test_name = f"one-sided Poisson P(X≥observed|λ) < {alpha:g}, observed ≥ {minimum}"
    # Every (category, town) and window at once: columns of one table, one vectorised test.
    order = sorted(range(len(counts.keys)), key=counts.keys.__getitem__)
    table = counts.table[order]
    keys = [counts.keys[k] for k in order]
    column = counts.windows
    observed = table[:, [column[s] for s in starts]]
    expected = (
        sum(
            table[:, [column[add_months(s, -months * k)] for s in starts]]
            for k in range(1, TRAILING + 1)
        )
        / TRAILING
    )
    p_values = _tests(observed, expected)
    # the rows worth a look: a spike now, or a peak in at least two earlier years
    hit = (observed >= minimum) & (p_values < alpha)
    candidates = np.flatnonzero(hit[:, 0] | (hit[:, 1:].sum(axis=1) >= 2))
    spots: list[Spot] = []
    for row in map(int, candidates):
        category, town = keys[row]
        seen, p = int(observed[row, 0]), float(p_values[row, 0])
        category_zh, town_zh = label("category", category)[0], label("town", town)[0]
        if hit[row, 0]:
            spots.append(
                Spot(
                    kind="spike",
                    category_code=category,
                    category_zh=category_zh,
                    area_code=town,
                    area_zh=town_zh,
                    period=period.label(),
                    observed=seen,
                    expected=round(float(expected[row, 0]), 3),
                    same_period_earlier_years=[
                        int(table[row, column[add_months(period.start, -12 * y)]])
                        for y in range(1, YEARS_BACK + 1)
                    ],
                    p_value=round(p, 6),
                    test=test_name,
                    proposal_id=f"HS-{period.label()}-{category}-{town}-spike",
                    reason=f"{category_zh or category} appeals in {town_zh or town}: {seen} in "
                    f"{period.label()} against {expected[row, 0]:.1f} expected; act now",
                    act_by=period.end + timedelta(days=14),
                )
            )
        peaks = [
            (starts[y].year, int(observed[row, y])) for y in range(1, YEARS_BACK + 1) if hit[row, y]
        ]
        if len(peaks) >= 2:
            label_ahead = period_of(period.kind, ahead).label()
            mean = sum(n for _, n in peaks) / len(peaks)
            trailing = sum(
                int(table[row, column[add_months(ahead, -months * k)]])
                for k in range(1, TRAILING + 1)
            )
            spots.append(
                Spot(
                    kind="season",
                    category_code=category,
                    category_zh=category_zh,
                    area_code=town,
                    area_zh=town_zh,
                    period=label_ahead,
                    observed=round(mean),
                    expected=round(trailing / TRAILING, 3),
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
    return HotSpots(period=period_out(period), alpha=alpha, spots=spots, recurring_places=places)


def _tests(observed: Any, expected: Any) -> Any:
    """One-sided Poisson P(X ≥ observed | λ) for every cell of the two tables at once."""
    if not len(observed):
        return np.zeros((0, 1 + YEARS_BACK))
    return poisson.sf(observed - 1, np.maximum(expected, MIN_LAMBDA))


async def _places(engine: AsyncEngine, period: Period, minimum: int) -> list[Place]:
    c = cells_table.c
    # A month's place cells of appeals are one per grid and category already: no grouping.
    total = c.spot_received if period.kind == "month" else func.sum(c.spot_received)
    query = (
        select(c.grid_code, c.category_code, total)
        .where(
            and_(
                c.grain == _MONTH_PLACE,
                c.kind == "appeal",
                # one month: equality, so the index hands the cells over by count
                c.period_start == period.start
                if period.kind == "month"
                else and_(c.period_start >= period.start, c.period_start < period.end),
                c.grid_code != "",
            )
        )
        .order_by(total.desc(), c.grid_code)
        .limit(100)
    )
    if period.kind == "month":
        query = query.where(total >= minimum)
    else:
        query = query.group_by(c.grid_code, c.category_code).having(total >= minimum)
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
