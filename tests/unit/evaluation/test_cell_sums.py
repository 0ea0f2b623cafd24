"""The rebuild's cell sums are additive: parts summed apart and added up, and the grains made
one at a time, give the rows of the roll-up of all the parts at once."""

from __future__ import annotations

from services.evaluation import cells
from tests.unit.evaluation.test_cells import PARTS, part


def test_sums_made_apart_add_up_to_the_roll_up_of_all_parts() -> None:
    parts = [*PARTS, part(13, channel="web"), PARTS[1]]  # PARTS[1] in both halves
    whole = sorted(row for block in cells.roll_up(parts) for row in block)
    apart = cells.add_fine([cells.fine_sums(parts[::2]), cells.fine_sums(parts[1::2])])
    by_grain = [
        row
        for grain in cells.GRAINS
        for block in cells.grain_rows(apart, grains=[grain.name], block=3)
        for row in block
    ]
    assert sorted(by_grain) == whole
    # a finest cell in both halves is summed, not listed twice
    assert len(apart[0]) == len(set(apart[0])) == len(cells.fine_sums(parts)[0])
    assert cells.add_fine([])[0] == []
