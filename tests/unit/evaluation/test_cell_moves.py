"""``cells.moves`` (the spread of a batch's differences over the grains, one sparse product)
gives what spreading each finest cell's difference grain by grain and adding it counter by
counter gives: the same cells, the same changes, the same places."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.evaluation import cells
from services.evaluation.models import CELL_COLUMNS, DIMENSIONS


def spread_one_by_one(delta: cells.Delta) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The cells ``delta`` moves, found as they were before the sparse product: each finest
    cell's nonzero changes added to each of its grains' cells one counter at a time, then a
    counter whose changes cancelled left out, and a cell left with none."""
    rows: dict[str, dict[str, Any]] = {}
    places: dict[str, Any] = {}
    summed: set[str] = set()
    for (day, dims), counters in delta.items():
        changes = {name: value for name, value in counters.items() if value}
        if not changes:
            continue
        for place in cells._spread(day, dims):
            key = cells.cell_key(*place)
            row = rows.get(key)
            if row is None:
                rows[key] = row = dict(changes)
                row["cell_key"] = key
                places[key] = place
                continue
            summed.add(key)
            for counter, value in changes.items():
                row[counter] = row.get(counter, 0) + value
    for key in summed:
        row = rows[key]
        for name in [n for n in CELL_COLUMNS if n in row and not row[n]]:
            del row[name]
        if set(row) == {"cell_key"}:
            del rows[key]
            del places[key]
    return rows, places


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
    assert moved.places == places
    assert moved.keys == list(expected)
    # The same changes as dense columns: the counters some cell changes, 0 where it does not.
    by_column = moved.by_column()
    used, dense = by_column.names, by_column.values
    assert list(used) == [n for n in CELL_COLUMNS if any(n in r for r in expected.values())]
    assert {
        key: {n: v for n, v in zip(used, values, strict=True) if v}
        for key, values in zip(by_column.keys, zip(*dense, strict=True), strict=False)
    } == {key: {n: v for n, v in row.items() if n != "cell_key"} for key, row in expected.items()}


def test_changes_that_cancel_move_no_cell() -> None:
    dims = tuple("appeal" if n == "kind" else "" for n in DIMENSIONS)
    delta: cells.Delta = {(date(2026, 10, 1), dims): {"tickets": 0, "received": 0}}
    moved = cells.moves(delta)
    assert moved.keys == [] and moved.changes == {} and moved.used == () and moved.values == []
