"""``bulk.Changes``: sparse rows of counter changes as one array a column (0 where a row leaves a
column), and back."""

from __future__ import annotations

from shared import bulk


def test_rows_of_changes_become_one_array_a_changed_column_and_back() -> None:
    rows = [{"key": "x", "c": 2}, {"key": "y", "a": -1, "c": 1}, {"key": "z", "a": 3}]
    changes = bulk.Changes.of(rows, "key", ("a", "b", "c"))
    assert changes.keys == ["x", "y", "z"]
    assert changes.names == ("a", "c")  # in the order given; "b" no row changes
    assert changes.values == [[0, -1, 3], [2, 1, 0]]
    assert changes.rows("key") == rows


def test_a_changed_column_s_array_holds_every_row_s_change_in_key_order() -> None:
    rows = [{"key": str(n), "b": n} for n in range(1, 5)]
    changes = bulk.Changes.of(rows, "key", ("a", "b"))
    assert changes.names == ("b",)
    assert changes.values == [[1, 2, 3, 4]]
