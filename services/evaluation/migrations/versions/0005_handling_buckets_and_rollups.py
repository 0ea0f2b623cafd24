"""handling-time buckets on the cells, roll-up grains

The p90 handling time is kept as bucket counters on each cell (``metrics_registry.BUCKETS``)
instead of the ``eval_handling`` histogram beside the cells, which is dropped. Cells now come in
more grains (``cells.GRAINS``) and a contribution is stored as its parts. The cells and
contributions of the old shape cannot be converted: they are emptied here, and
``fengqiao evaluation rebuild --from-ledger`` refolds every fact from the ledger and refills them.

Revision ID: 0005
Revises: evaluation_audit_trail
Create Date: 2026-12-04 23:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = 'evaluation_audit_trail'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the registry does): quarter days to 10 working
# days, whole days to 30, then the open bucket.
EDGES = (*range(25, 1001, 25), *range(1100, 3001, 100))
BUCKETS = (*(f"h_{edge:04d}" for edge in EDGES), "h_over")


def upgrade() -> None:
    op.execute("DELETE FROM eval_cells")
    op.execute("DELETE FROM eval_contributions")
    with op.batch_alter_table('eval_cells', schema=None) as batch_op:
        for name in BUCKETS:
            batch_op.add_column(sa.Column(name, sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index(
            'ix_eval_cells_hotspots',
            ['grain', 'period_start', 'kind', 'category_code', 'town_code', 'grid_code', 'received'],
            unique=False,
            postgresql_where=sa.text("grain IN ('month_category', 'month_place')"),
            sqlite_where=sa.text("grain IN ('month_category', 'month_place')"),
        )
        batch_op.create_index(
            'ix_eval_cells_places',
            ['period_start', 'received', 'grid_code', 'category_code', 'kind'],
            unique=False,
            postgresql_where=sa.text("grain = 'month_place'"),
            sqlite_where=sa.text("grain = 'month_place'"),
        )
    with op.batch_alter_table('eval_handling', schema=None) as batch_op:
        batch_op.drop_index('ix_eval_handling_period')
    op.drop_table('eval_handling')


def downgrade() -> None:
    op.execute("DELETE FROM eval_cells")
    op.execute("DELETE FROM eval_contributions")
    with op.batch_alter_table('eval_cells', schema=None) as batch_op:
        batch_op.drop_index('ix_eval_cells_places')
        batch_op.drop_index('ix_eval_cells_hotspots')
    op.create_table('eval_handling',
    sa.Column('cell_key', sa.String(length=40), nullable=False),
    sa.Column('centidays', sa.Integer(), nullable=False),
    sa.Column('grain', sa.String(length=16), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('cell_key', 'centidays')
    )
    with op.batch_alter_table('eval_handling', schema=None) as batch_op:
        batch_op.create_index('ix_eval_handling_period', ['grain', 'period_start'], unique=False)
    with op.batch_alter_table('eval_cells', schema=None) as batch_op:
        for name in BUCKETS:
            batch_op.drop_column(name)
