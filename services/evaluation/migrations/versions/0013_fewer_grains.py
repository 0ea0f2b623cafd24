"""two cell grains fewer: every applied event moved a cell of each

``month_town`` (the city, districts and towns by month: now ``month_service`` and
``month_category``) and ``month`` (whole months with filters no roll-up keeps: now the month's
days of ``day``, about as many rows) are no longer written or read; their cells are deleted.
Downgrade sums them again from the grain each was answered from (each of their cells is the sum of that grain's cells in its
period, projected onto its dimensions, as the live apply wrote them).

Revision ID: 0013_fewer_grains
Revises: 0012_period_keys
Create Date: 2026-12-06 11:40:00.000000
"""

import hashlib
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0013_fewer_grains"
down_revision: str | None = "0012_period_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000
_TOWN = ("kind", "district_code", "town_code")
# dropped grain: (the grain it is summed from, its period, the dimensions it keeps; None: all)
DROPPED: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "month_town": ("month_coarse", "month", _TOWN),
    "month": ("day", "month", None),
}


def upgrade() -> None:
    names = ", ".join(f"'{grain}'" for grain in DROPPED)
    op.execute(f"DELETE FROM eval_cells WHERE grain IN ({names})")


def _key(grain: str, start: date, dims: tuple[str, ...]) -> str:
    """``cells.cell_key`` as it stands at this revision."""
    day = start.isoformat()
    digest = hashlib.blake2b("|".join((grain, day, *dims)).encode(), digest_size=16).hexdigest()
    return day.replace("-", "") + digest[:24]


def _start(period: str, day: date) -> date:
    assert period == "month"
    return day.replace(day=1)


def _summed(
    bind: Any, cells: sa.Table, grain: str, dims: list[str], counted: list[str]
) -> Iterator[dict[str, Any]]:
    """The cells of dropped ``grain``, a period at a time (its source read in period order)."""
    source, period, kept = DROPPED[grain]
    query = (
        sa.select(cells.c.period_start, *(cells.c[d] for d in dims), *(cells.c[n] for n in counted))
        .where(cells.c.grain == source)
        .order_by(cells.c.period_start)
    )
    current: date | None = None
    sums: dict[str, dict[str, Any]] = {}
    for row in bind.execute(query):
        day = row[0] if isinstance(row[0], date) else date.fromisoformat(str(row[0]))
        start = _start(period, day)
        if start != current:
            yield from sums.values()
            current, sums = start, {}
        values = tuple(
            v if kept is None or name in kept else ""
            for name, v in zip(dims, row[1 : 1 + len(dims)], strict=True)
        )
        key = _key(grain, start, values)
        cell = sums.get(key)
        if cell is None:
            sums[key] = cell = {
                "cell_key": key,
                "grain": grain,
                "period_start": start,
                **dict(zip(dims, values, strict=True)),
                **dict.fromkeys(counted, 0),
            }
        for name, value in zip(counted, row[1 + len(dims) :], strict=True):
            cell[name] += int(value or 0)
    yield from sums.values()


def downgrade() -> None:
    bind = op.get_bind()
    cells = sa.Table("eval_cells", sa.MetaData(), autoload_with=bind)
    # the dimensions are the text columns besides the key and the grain; the rest are counted
    # (but ``spot_received``, which the database computes)
    dims = [
        c.name
        for c in cells.columns
        if isinstance(c.type, sa.String) and c.name not in ("cell_key", "grain")
    ]
    fixed = {"cell_key", "grain", "period_start", "spot_received", *dims}
    counted = [c.name for c in cells.columns if c.name not in fixed]
    for grain in DROPPED:
        rows: list[dict[str, Any]] = []
        for cell in _summed(bind, cells, grain, dims, counted):
            rows.append(cell)
            if len(rows) == BATCH:
                bind.execute(cells.insert(), rows)
                rows = []
        if rows:
            bind.execute(cells.insert(), rows)
