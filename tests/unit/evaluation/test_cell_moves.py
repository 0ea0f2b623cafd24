"""``cells.moves`` (the spread of a batch's differences over the grains) gives what spreading
each finest cell's difference grain by grain and adding it counter by counter gives: the same
cells, the same changes, the same places — the reference for any faster way of doing it."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.evaluation import cells
from services.evaluation.models import CELL_COLUMNS, DIMENSIONS


def spread_one_by_one(delta: cells.Delta) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The cells ``delta`` moves, from every share of each finest cell that changes something:
    its counters added to its cell's one by one, then the counters that ended at 0 left out,
    and a cell left with none; the cells in the order they first came."""
    summed: dict[str, Counter[str]] = {}
    places: dict[str, Any] = {}
    changing = [(day, dims, c) for (day, dims), c in delta.items() if any(c.values())]
    for share in cells.shares(changing):
        summed.setdefault(share.cell_key, Counter()).update(share.counters)
        places.setdefault(share.cell_key, (share.grain, share.period_start, share.dims))
    moved = {
        key: {**{n: v for n, v in counted.items() if v}, "cell_key": key}
        for key, counted in summed.items()
        if any(counted.values())
    }
    return moved, {key: places[key] for key in moved}


# Few values per dimension and days around month and week ends, so that finest cells share
# their coarser grains' cells and changes cancel there.
_VALUES = {
    "kind": ["appeal", "case"],
    "department_code": ["", "A", "B"],
    "district_code": ["330602", "330603"],
    "town_code": ["", "330602001"],
    "grid_code": ["", "G1", "G2"],
    "category_code": ["", "0101", "0102", "0201"],
}
dimension_values = st.tuples(
    *(st.sampled_from(_VALUES.get(name, ["", "x"])) for name in DIMENSIONS)
)
days = st.integers(0, 9).map(lambda n: date(2026, 9, 27) + timedelta(days=n))
counters = st.dictionaries(
    st.sampled_from(CELL_COLUMNS[:6] + CELL_COLUMNS[-3:]), st.integers(-2, 2), max_size=5
)
parts = st.tuples(days, dimension_values, counters)


@st.composite
def deltas(draw: st.DrawFn) -> cells.Delta:
    """Parts added, and parts moved from one finest cell to another (a refolded fact: its old
    part taken away, its new one added), whose changes cancel in the grains that keep neither
    the day nor the dimension that differs."""
    delta: cells.Delta = {}
    cells.add_parts(delta, draw(st.lists(parts, max_size=20)), 1)
    for old, new in draw(
        st.lists(st.tuples(parts, st.tuples(days, dimension_values)), max_size=20)
    ):
        cells.add_parts(delta, [old], -1)
        cells.add_parts(delta, [(*new, old[2])], 1)
    return delta


@settings(max_examples=300, deadline=None)
@given(deltas())
def test_the_batch_spread_equals_the_spread_cell_by_cell(delta: cells.Delta) -> None:
    expected, places = spread_one_by_one(delta)
    moved = cells.moves(delta)
    assert moved.changes == expected
    assert list(moved.changes) == list(expected)  # in the order the cells first came
    assert {key: moved.places[key] for key in moved.changes} == places


def test_changes_that_cancel_move_no_cell() -> None:
    dims = tuple("appeal" if n == "kind" else "" for n in DIMENSIONS)
    delta: cells.Delta = {(date(2026, 10, 1), dims): {"tickets": 0, "received": 0}}
    moved = cells.moves(delta)
    assert moved.changes == {}
