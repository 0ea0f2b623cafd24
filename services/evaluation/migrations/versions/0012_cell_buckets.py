"""the cells' handling-time buckets in a table of their own (``eval_cell_buckets``)

Each event the live apply folds moves about eight cells, and each move wrote a new version of a
146-column row; 61 of those columns are the handling-time buckets (for the p90), mostly zero and
changed only when a completion moves a ticket's bucket. They now live in ``eval_cell_buckets``
(the cell's key and the 61 buckets), a row only for a cell some bucket of which is not zero, so
the common moves write a row of 85 columns. The values move over in one ``INSERT … SELECT`` (the
cells with a bucket not zero), then the columns are dropped: on PostgreSQL a change of the
catalog only, no table rewritten (the new versions of a row carry the dropped columns as nulls:
a bit each, no bytes); SQLite 3.35 or later drops them in place. Downgrade adds the columns back
(0 by default, instant on PostgreSQL 11+), copies the buckets into them and drops the table.

Revision ID: 0012_buckets
Revises: 0011_header_block
Create Date: 2026-12-06 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_buckets"
down_revision: str | None = "0011_header_block"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the registry or the model does): the buckets of
# 0005, the cells' settings of 0009 and 0010.
EDGES = (*range(25, 1001, 25), *range(1100, 3001, 100))
BUCKETS = (*(f"h_{edge:04d}" for edge in EDGES), "h_over")
SETTINGS = (
    "fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 20000, "
    "autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_vacuum_insert_threshold = 50000, "
    "autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 20000"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    key = 'varchar(40) COLLATE "C"' if postgres else "VARCHAR(40)"
    columns = "".join(f", {name} INTEGER DEFAULT '0' NOT NULL" for name in BUCKETS)
    options = f" WITH ({SETTINGS})" if postgres else ""
    op.execute(
        f"CREATE TABLE eval_cell_buckets (cell_key {key} NOT NULL{columns}, "
        f"PRIMARY KEY (cell_key)){options}"
    )
    listed = ", ".join(BUCKETS)
    op.execute(
        f"INSERT INTO eval_cell_buckets (cell_key, {listed}) SELECT cell_key, {listed} "
        f"FROM eval_cells WHERE {' OR '.join(f'{name} <> 0' for name in BUCKETS)}"
    )
    if postgres:
        op.execute(f"ALTER TABLE eval_cells {', '.join(f'DROP COLUMN {n}' for n in BUCKETS)}")
    else:
        for name in BUCKETS:
            op.execute(f"ALTER TABLE eval_cells DROP COLUMN {name}")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    added = [f"ADD COLUMN {name} INTEGER DEFAULT '0' NOT NULL" for name in BUCKETS]
    if postgres:
        op.execute(f"ALTER TABLE eval_cells {', '.join(added)}")
    else:
        for change in added:
            op.execute(f"ALTER TABLE eval_cells {change}")
    sets = ", ".join(f"{name} = b.{name}" for name in BUCKETS)
    op.execute(
        f"UPDATE eval_cells SET {sets} FROM eval_cell_buckets AS b "
        "WHERE eval_cells.cell_key = b.cell_key"
    )
    op.execute("DROP TABLE eval_cell_buckets")
