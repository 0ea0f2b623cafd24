"""cells: no index holds a counter that moves on every grain; fewer, partial dimension indexes

Every applied event moves about ten cells, and each new cell or update that is not heap-only
added an entry to each of the seven indexes of ``eval_cells``. Two of them (the hot-spot and the
recurring-place indexes) held the counter ``received``, and PostgreSQL makes an update heap-only
only when no indexed column's value changes: every move of ``received``, on any grain, touched
every index. They now hold ``spot_received``, a column the database computes (``received`` on
the two hot-spot grains, 0 on the others), so only those two grains' moves of it do. The
district index is dropped (a district is a quarter of a period's cells; the one query that read
it, a district's towns in a month, reads 20 cells through the period index), and the department
and town indexes keep entries only for the grains where a period holds many cells (about a row
per ticket, read a day at a time, or the place cells for towns).

On PostgreSQL the new column rewrites the table (its pages filled to the table's fillfactor
again) and the indexes are built anew: minutes on a large table. On SQLite the column is
computed when read.

Revision ID: 0008_indexes
Revises: 0007_week
Create Date: 2026-12-06 00:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_indexes"
down_revision: str | None = "0007_week"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the model does).
DEPARTMENT_INDEXED = "grain IN ('day', 'day_coarse', 'month')"
TOWN_INDEXED = "grain IN ('day', 'day_coarse', 'month_place', 'month')"
CATEGORY_OR_PLACE = "grain IN ('month_category', 'month_place')"
PLACE = "grain = 'month_place'"
SPOT_RECEIVED = f"CASE WHEN {CATEGORY_OR_PLACE} THEN received ELSE 0 END"


# name → (columns, predicate) before and after this revision
Indexes = dict[str, tuple[list[str], str | None]]
BEFORE: Indexes = {
    "ix_eval_cells_department": (["grain", "department_code", "period_start"], None),
    "ix_eval_cells_district": (["grain", "district_code", "period_start"], None),
    "ix_eval_cells_town": (["grain", "town_code", "period_start"], None),
    "ix_eval_cells_hotspots": (
        ["grain", "period_start", "kind", "category_code", "town_code", "grid_code", "received"],
        CATEGORY_OR_PLACE,
    ),
    "ix_eval_cells_places": (
        ["period_start", "received", "grid_code", "category_code", "kind"],
        PLACE,
    ),
}
AFTER: Indexes = {
    "ix_eval_cells_department": (["grain", "department_code", "period_start"], DEPARTMENT_INDEXED),
    "ix_eval_cells_town": (["grain", "town_code", "period_start"], TOWN_INDEXED),
    "ix_eval_cells_hotspots": (
        ["grain", "period_start", "kind", "category_code", "town_code", "grid_code"]
        + ["spot_received"],
        CATEGORY_OR_PLACE,
    ),
    "ix_eval_cells_places": (
        ["period_start", "spot_received", "grid_code", "category_code", "kind"],
        PLACE,
    ),
}


def _replace(dropped: Indexes, built: Indexes, *, spot: bool) -> None:
    with op.batch_alter_table("eval_cells", schema=None) as batch_op:
        for name in dropped:
            batch_op.drop_index(name)
        if spot:
            # stored on PostgreSQL (an index needs it); SQLite adds only a virtual one to a table
            stored = True if op.get_bind().dialect.name == "postgresql" else None
            computed = sa.Computed(SPOT_RECEIVED, persisted=stored)
            batch_op.add_column(sa.Column("spot_received", sa.BigInteger(), computed))
        else:
            batch_op.drop_column("spot_received")
        for name, (columns, where) in built.items():
            predicate = None if where is None else sa.text(where)
            batch_op.create_index(
                name, columns, unique=False, postgresql_where=predicate, sqlite_where=predicate
            )


def upgrade() -> None:
    _replace(BEFORE, AFTER, spot=True)


def downgrade() -> None:
    _replace(AFTER, BEFORE, spot=False)
