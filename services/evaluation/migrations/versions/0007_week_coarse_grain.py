"""a week roll-up of the department cells

``week_coarse`` keeps what ``day_coarse`` keeps (kind, district, town, department and its tier,
top-level category) over weeks from Monday, so a week by department sums a few thousand rows
instead of seven days' worth. Its cells are the sums of the ``day_coarse`` cells of each week,
filled here from them; from now on every applied event moves them too.

Revision ID: 0007_week
Revises: 0006_apply
Create Date: 2026-12-05 04:40:00.000000
"""

import hashlib
from collections.abc import Sequence
from datetime import date, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = '0007_week'
down_revision: str | None = '0006_apply'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000


def _key(start: date, dims: tuple[str, ...]) -> str:
    """``cells.cell_key`` as it stands at this revision."""
    text = "|".join(("week_coarse", start.isoformat(), *dims))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def upgrade() -> None:
    bind = op.get_bind()
    cells = sa.Table("eval_cells", sa.MetaData(), autoload_with=bind)
    # the dimensions are the text columns besides the key and the grain; the rest are counted
    dims = [
        c.name
        for c in cells.columns
        if isinstance(c.type, sa.String) and c.name not in ("cell_key", "grain")
    ]
    fixed = {"cell_key", "grain", "period_start", *dims}
    counted = [c.name for c in cells.columns if c.name not in fixed]
    query = sa.select(
        cells.c.period_start, *(cells.c[d] for d in dims), *(cells.c[n] for n in counted)
    ).where(cells.c.grain == "day_coarse")
    # day cells to week cells in Python: the key is a hash the databases do not share
    weeks: dict[str, dict[str, object]] = {}
    for row in bind.execute(query):
        day = row[0] if isinstance(row[0], date) else date.fromisoformat(str(row[0]))
        start = day - timedelta(days=day.weekday())
        values = tuple(row[1 : 1 + len(dims)])
        key = _key(start, values)
        cell = weeks.get(key)
        if cell is None:
            weeks[key] = cell = {
                "cell_key": key,
                "grain": "week_coarse",
                "period_start": start,
                **dict(zip(dims, values, strict=True)),
                **dict.fromkeys(counted, 0),
            }
        for name, value in zip(counted, row[1 + len(dims) :], strict=True):
            cell[name] = int(cell[name]) + int(value or 0)  # type: ignore[call-overload]
    rows = list(weeks.values())
    for first in range(0, len(rows), BATCH):
        bind.execute(cells.insert(), rows[first : first + BATCH])


def downgrade() -> None:
    op.execute("DELETE FROM eval_cells WHERE grain = 'week_coarse'")
