"""Synthetic cells for the evaluation benchmark: millions of ticket facts drawn with numpy, a
month at a time, and summed into the cells of each grain (the facts themselves are not stored:
the committee queries read only cells).

The facts cover two years from ``START``, every grid of the demo city and every leaf category;
departments follow the area, as in a real city: the town office (one of five desks per town, by
category) 60 %, a district bureau (by top-level category) 25 %, the village committee 15 %. The
counters mirror ``cells.ticket_counters`` for a ticket with one dispatch; handling time is
gamma(2, 0.9)-like (the sum of two exponentials), 95 % of tickets completed, 2 % late, 76 % with
a counted callback. Cell keys are ``cells.cell_key``, as live.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

from services.evaluation import cells
from services.evaluation.metrics_registry import BUCKETS, COUNTERS, HANDLING_EDGES
from services.evaluation.models import DIMENSIONS
from shared import taxonomy
from shared.geo import city


@dataclass(frozen=True)
class City:
    """The demo city's grids and leaf categories, and the department of each choice."""

    grids: list[str]
    categories: list[str]

    @classmethod
    def load(cls) -> City:
        tree = city()
        grids = sorted(a.code for a in tree.subtree(tree.root.code) if a.tier.value == "grid")
        return cls(grids, sorted(c.code for c in taxonomy.leaves()))


def _month_days(start: date, days: int) -> Iterator[tuple[date, int]]:
    """(first day, number of days) of each month in ``start`` + ``days``."""
    day, end = start, start + timedelta(days=days)
    while day < end:
        last = date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])
        span = (min(last + timedelta(days=1), end) - day).days
        yield day, span
        day += timedelta(days=span)


def month_cells(
    where: City, start: date, days: int, n: int, grains: tuple[str, ...], seed: int = 7
) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """(grain, cell rows in ``cells_table`` column order) per month and grain."""
    rng = np.random.default_rng(seed)
    grid = np.array(where.grids)
    cat = np.array(where.categories)
    areas = {
        name: np.unique([code[:width] for code in where.grids], return_inverse=True)[1]
        for name, width in (("district_code", 6), ("town_code", 9), ("village_code", 12))
    }
    top = np.unique([code[:2] for code in where.categories], return_inverse=True)[1]
    done_so_far = 0
    for first, span in _month_days(start, days):
        count = round(n * (first - start + timedelta(days=span)).days / days) - done_so_far
        g = np.arange(done_so_far, done_so_far + count)
        done_so_far += count
        facts = _draw(rng, g, len(grid), len(cat), span)
        ids = {name: area[facts["grid"]] for name, area in areas.items()}
        ids["grid_code"] = facts["grid"]
        ids["category_code"] = facts["cat"]
        ids["category_top"] = top[facts["cat"]]
        ids["department_tier"] = facts["tier"]
        ids["department_code"] = np.select(
            [facts["tier"] == 0, facts["tier"] == 1],
            [
                ids["town_code"] * 5 + ids["category_top"] % 5,
                10_000 + ids["district_code"] * 100 + ids["category_top"],
            ],
            20_000 + ids["village_code"],
        )
        ids["channel"], ids["enterprise"] = facts["channel"], facts["enterprise"]
        for grain in grains:
            yield grain, _sum(grain, first, facts, ids, grid, cat)


def _draw(rng: np.random.Generator, g: Any, grids: int, cats: int, span: int) -> dict[str, Any]:
    n = len(g)
    done = rng.random(n) < 0.95
    late = rng.random(n) < 0.02
    answered = rng.random(n) < 0.76
    resolved = rng.random(n) < 0.97
    sat = rng.random(n)
    who = rng.random(n)
    handling = 0.9 * (rng.exponential(size=n) + rng.exponential(size=n))
    centi = np.where(done, np.round(handling * 100), 0).astype(np.int64)
    tier = np.where(who < 0.6, 0, np.where(who < 0.85, 1, 2))  # town, district, village
    counted = done & answered
    counters = {
        "completed": done,
        "completed_on_time": done & ~late,
        "callbacks": counted,
        "callbacks_on_open": answered & ~done,
        "resolved": counted & resolved,
        "satisfied": counted & (sat < 0.9),
        "basically_satisfied": counted & (sat >= 0.9) & (sat < 0.98),
        "dissatisfied": counted & (sat >= 0.98),
        "one_time": done & (g % 50 != 0) & (g % 23 != 0),
        "repeats": g % 23 == 0,
        "returned": g % 50 == 0,
        "transferred": g % 40 == 0,
        "extended": g % 30 == 0,
        "escalated": g % 60 == 0,
        "whistled": g % 200 == 0,
        "closed_village": done & (tier == 2),
        "closed_town": done & (tier != 1),
        "handling_centidays": centi,
        "sign_on_time": ~(done & late),
    }
    return {
        "day": rng.integers(0, span, n),
        "grid": rng.integers(0, grids, n),
        "cat": rng.integers(0, cats, n),
        "channel": g % 72,
        "enterprise": (g % 17 == 0).astype(np.int64),
        "tier": tier,
        "bucket": np.where(done, np.searchsorted(HANDLING_EDGES, centi, side="left"), -1),
        "counters": counters,
    }


_ONES = (
    "tickets",
    "received",
    "dispatched",
    "dispatches",
    "sign_due",
    "contact_due",
    "contact_on_time",
)
_TIERS = ("town", "district", "village")


def _sum(
    grain: str, first: date, facts: dict[str, Any], ids: dict[str, Any], grid: Any, cat: Any
) -> list[Any]:
    kept = cells.BY_NAME[grain]
    daily = kept.period == "day"
    parts = [facts["day"] if daily else np.zeros_like(facts["day"])]
    parts += [ids[d] for d in DIMENSIONS if d in kept.dimensions and d in ids]
    out = []
    for (day, grid_i, cat_i, tier_i, channel, enterprise), sums in _grouped(parts, facts):
        values = _dims(grid[grid_i], cat[cat_i], _TIERS[tier_i], channel, enterprise)
        at = tuple(
            v if d in kept.dimensions else "" for d, v in zip(DIMENSIONS, values, strict=True)
        )
        start = first + timedelta(days=int(day)) if daily else first
        out.append((cells.cell_key(grain, start, at), grain, start, *at, *sums))
    return out


def _grouped(parts: list[Any], facts: dict[str, Any]) -> list[Any]:
    """Group the facts by the kept dimensions; per group a sample fact's fields and the sums."""
    key = np.zeros(len(parts[0]), dtype=np.int64)
    scale = 1
    for part in parts:
        radix = int(part.max()) + 1
        scale *= radix
        assert scale < 2**62, "the combined key would overflow"
        key = key * radix + part
    groups, sample, inverse = np.unique(key, return_index=True, return_inverse=True)
    size = len(groups)
    summed = {
        name: np.bincount(inverse, weights=values, minlength=size).astype(np.int64)
        for name, values in facts["counters"].items()
    }
    tickets = np.bincount(inverse, minlength=size)
    done = facts["bucket"] >= 0
    buckets = np.bincount(
        inverse[done] * len(BUCKETS) + facts["bucket"][done], minlength=size * len(BUCKETS)
    ).reshape(size, len(BUCKETS))
    columns = [
        tickets if name in _ONES else summed.get(name, np.zeros(size, dtype=np.int64))
        for name in COUNTERS
    ]
    matrix = np.column_stack([*columns, buckets]).tolist()
    fields = [facts[f][sample].tolist() for f in ("day", "grid", "cat", "tier", "channel")]
    fields.append(facts["enterprise"][sample].tolist())
    return [(tuple(f[i] for f in fields), matrix[i]) for i in range(size)]


def _dims(grid: str, cat: str, tier: str, channel: int, enterprise: int) -> tuple[str, ...]:
    top = cat[:2]
    department = {
        "town": f"T{grid[:9]}-{int(top) % 5}",
        "district": f"D{grid[:6]}-{top}",
        "village": f"V{grid[:12]}",
    }[tier]
    values = {
        "kind": "appeal",
        "department_code": department,
        "department_tier": tier,
        "district_code": grid[:6],
        "town_code": grid[:9],
        "village_code": grid[:12],
        "grid_code": grid,
        "channel": f"ch-{channel}",
        "category_top": top,
        "category_code": cat,
        "handling_line": "normal",
        "enterprise": str(enterprise),
    }
    return tuple(values[d] for d in DIMENSIONS)
