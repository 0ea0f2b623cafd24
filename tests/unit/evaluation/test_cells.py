"""The cell grains: each question sums the smallest roll-up that answers it exactly, a stored
contribution gives back every share, and the rebuild's bulk roll-up equals the shares summed."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from services.evaluation import cells
from services.evaluation.models import CELL_COLUMNS, DIMENSIONS, TicketFact
from services.evaluation.periods import period_of
from services.evaluation.queries import Filters, grain_for
from shared.bulk import Draft


@pytest.mark.parametrize(
    ("period", "needed", "grain"),
    [
        ("month", {"kind"}, "month_service"),
        ("month", {"kind", "district_code"}, "month_category"),
        ("month", {"kind", "town_code"}, "month_category"),
        ("month", {"kind", "channel"}, "month_service"),
        ("month", {"kind", "enterprise", "handling_line"}, "month_service"),
        ("month", {"kind", "category_code"}, "month_category"),
        ("month", {"kind", "department_code", "category_top"}, "month_coarse"),
        ("month", {"kind", "village_code"}, "month_place"),
        # no month grain keeps them: the month's days
        ("month", {"kind", "department_code", "channel"}, "day"),
        ("day", {"kind"}, "day_town"),
        ("day", {"kind", "department_code"}, "day_coarse"),
        ("day", {"kind", "category_code"}, "day"),
        ("week", {"kind"}, "day_town"),
        ("week", {"kind", "town_code"}, "day_town"),
        ("week", {"kind", "department_code"}, "week_coarse"),
        ("week", {"kind", "department_tier", "category_top"}, "week_coarse"),
        ("week", {"kind", "category_code"}, "day"),
    ],
)
def test_a_question_sums_the_smallest_grain_keeping_its_dimensions(
    period: str, needed: set[str], grain: str
) -> None:
    assert cells.grain_for(period, needed).name == grain


def part(day: int, **values: str) -> cells.Part:
    dims = dict.fromkeys(DIMENSIONS, "")
    dims.update(kind="appeal", district_code="330602", town_code="330602001", **values)
    return (date(2026, 10, day), tuple(dims[d] for d in DIMENSIONS), {"tickets": 1, "h_0250": 1})


PARTS = [
    part(12, department_code="A", channel="web"),
    part(12, department_code="B", channel="web"),
    part(13, department_code="A", channel="phone", grid_code="G1"),
]


def test_a_stored_contribution_gives_back_every_share() -> None:
    shares = cells.shares(PARTS)
    assert len(shares) == len(PARTS) * len(cells.GRAINS)
    assert cells.from_stored(cells.stored(PARTS)) == shares


def test_the_bulk_roll_up_equals_the_shares_summed() -> None:
    summed: dict[str, Counter[str]] = {}
    for share in cells.shares(PARTS):
        summed.setdefault(share.cell_key, Counter()).update(share.counters)
    # blocks of two rows: every cell comes out once however the blocks fall
    blocks = list(cells.roll_up(PARTS, block=2))
    assert {len(b) for b in blocks[:-1]} == {2}
    rows = [dict(zip(cells.ROW_COLUMNS, row, strict=True)) for block in blocks for row in block]
    rolled = {r["cell_key"]: r for r in rows}
    assert len(rows) == len(rolled)
    assert {
        k: {n: v for n, v in r.items() if n in CELL_COLUMNS and v} for k, r in rolled.items()
    } == {k: dict(c) for k, c in summed.items()}
    # the three parts share one town (and category) cell a month and a town cell a day
    town = [r for r in rolled.values() if r["grain"] in ("month_category", "day_town")]
    assert sorted((r["grain"], str(r["period_start"]), r["tickets"]) for r in town) == [
        ("day_town", "2026-10-12", 2),
        ("day_town", "2026-10-13", 1),
        ("month_category", "2026-10-01", 3),
    ]


def test_a_batch_moves_each_cell_once_by_the_counters_that_change() -> None:
    old = [part(12, department_code="A", channel="web")]
    new = [part(12, department_code="B", channel="web")]  # reassigned from A to B
    delta: cells.Delta = {}
    cells.add_parts(delta, old, -1)
    cells.add_parts(delta, new, 1)
    moved = cells.spread(delta)
    expected: dict[str, Counter[str]] = {}
    for sign, parts in ((-1, old), (1, new)):
        for share in cells.shares(parts):
            counted = expected.setdefault(share.cell_key, Counter())
            for name, value in share.counters.items():
                counted[name] += sign * value
    assert {
        k: {n: row[n] for n in ("tickets", "h_0250") if n in row} for k, row in moved.items()
    } == {k: {n: v for n, v in c.items() if v} for k, c in expected.items() if any(c.values())}
    # the town and channel roll-ups keep no department: their counts cancel, so they are not moved
    assert {row["grain"] for row in moved.values()} == {
        "day_coarse",
        "week_coarse",
        "day",
        "month_coarse",
    }
    # a dimension that is "" is left out of the row (the database stores "")
    assert all("grid_code" not in row for row in moved.values())


def test_a_part_counts_in_the_week_from_its_monday() -> None:
    sunday = date(2026, 10, 18)
    spread = {name: start for name, start, _ in cells._spread(sunday, PARTS[0][1])}
    assert spread["week_coarse"] == date(2026, 10, 12)  # the Monday before
    assert spread["day_coarse"] == sunday and spread["month_coarse"] == date(2026, 10, 1)
    assert cells.period_start("week_coarse", date(2026, 10, 12)) == date(2026, 10, 12)


def test_whole_weeks_sum_week_cells_but_their_trend_is_by_day() -> None:
    week = period_of("week", date(2026, 10, 14))
    assert week.grain == "week"
    assert period_of("day", date(2026, 10, 14)).grain == "day"
    assert period_of("month", date(2026, 10, 14)).grain == "month"
    by_department = Filters(department="330602001-A")
    assert grain_for(week, by_department, None) == "week_coarse"
    assert grain_for(week, by_department, "period") == "day_coarse"


def test_whole_months_no_month_grain_answers_sum_their_days() -> None:
    month = period_of("month", date(2026, 10, 14))
    assert grain_for(month, Filters(department="330602001-A"), None) == "month_coarse"
    assert grain_for(month, Filters(department="330602001-A", channel="web"), None) == "day"
    assert grain_for(month, Filters(department="330602001-A", channel="web"), "period") == "day"
    assert grain_for(month, Filters(area="339902001"), None) == "month_category"
    assert grain_for(month, Filters(), "district") == "month_category"
    assert grain_for(month, Filters(), None) == "month_service"


def test_a_parts_dimension_values_stand_under_their_names() -> None:
    # ``_dims`` builds its tuple by position: each value must land in its dimension's place.
    ticket = Draft(
        TicketFact,
        ticket_id="T-1",
        kind="appeal",
        district_code="330102",
        town_code="330102001",
        village_code="330102001001",
        grid_code="330102001001001",
        channel="12345",
        category_code="0104",
        is_enterprise=True,
    )
    dims = cells._dims(ticket, department="D-7", tier="town", line="ordinary")
    assert dict(zip(DIMENSIONS, dims, strict=True)) == {
        "kind": "appeal",
        "department_code": "D-7",
        "department_tier": "town",
        "district_code": "330102",
        "town_code": "330102001",
        "village_code": "330102001001",
        "grid_code": "330102001001001",
        "channel": "12345",
        "category_top": "01",
        "category_code": "0104",
        "handling_line": "ordinary",
        "enterprise": "1",
    }
