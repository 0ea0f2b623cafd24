"""cell keys that sort by period

A cell's key was a digest of where it is (32 hex digits): the cells the live apply moves were
spread over the whole key index, and beside years of cells most moves read an index page the
database did not hold in memory. Keys now begin with the period's first day (``YYYYMMDD``) and
keep the first 24 hex digits of the same digest (``cells.cell_key``), so a period's cells sit
together in the index. The new key is computed from the old one and the period in SQL; the way
back recomputes each full digest from the cell's grain, period and dimensions.

Every row of ``eval_cells`` is rewritten (a few minutes beside 10 M facts, under the table's
lock): run it with the service stopped, as every migration.

Revision ID: 0012_period_keys
Revises: 0011_header_block
Create Date: 2026-12-06 11:30:00.000000
"""

import hashlib
from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from alembic import op

revision: str = "0012_period_keys"
down_revision: str | None = "0011_header_block"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000


def upgrade() -> None:
    day = (
        "to_char(period_start, 'YYYYMMDD')"
        if op.get_bind().dialect.name == "postgresql"
        else "replace(period_start, '-', '')"
    )
    op.execute(f"UPDATE eval_cells SET cell_key = {day} || substr(cell_key, 1, 24)")


def _day(value: object) -> date:
    """A stored period start (SQLite's reflected ``DATE`` may give text)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def downgrade() -> None:
    bind = op.get_bind()
    cells = sa.Table("eval_cells", sa.MetaData(), autoload_with=bind)
    # the dimensions, in key order, are the text columns besides the key and the grain (0007)
    dims = [
        c
        for c in cells.columns
        if isinstance(c.type, sa.String) and c.name not in ("cell_key", "grain")
    ]
    rows = bind.execute(
        sa.select(cells.c.cell_key, cells.c.grain, cells.c.period_start, *dims)
    ).all()
    renamed = [
        {
            "new": key,
            "old": hashlib.blake2b(
                "|".join((grain, _day(start).isoformat(), *values)).encode(), digest_size=16
            ).hexdigest(),
        }
        for key, grain, start, *values in rows
    ]
    update = (
        sa.update(cells)
        .where(cells.c.cell_key == sa.bindparam("new"))
        .values(cell_key=sa.bindparam("old"))
    )
    for at in range(0, len(renamed), BATCH):
        bind.execute(update, renamed[at : at + BATCH])
