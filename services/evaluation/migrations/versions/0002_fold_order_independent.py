"""ticket facts: fold events independently of their arrival order

Adds the latest assignment's time (department and line follow the latest assignment, not the
last to arrive) and the counted callback's id and revision (a callback replaces the counted one
only with a higher revision). Rows from 0001 have none: their next assignment or callback is
taken as it arrives, as before; replaying the event stream rebuilds them exactly.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import shared.db


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('ticket_facts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assigned_at', shared.db.AwareDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('feedback_id', sqlmodel.sql.sqltypes.AutoString(length=48), nullable=True))
        batch_op.add_column(sa.Column('feedback_revision', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ticket_facts', schema=None) as batch_op:
        batch_op.drop_column('feedback_revision')
        batch_op.drop_column('feedback_id')
        batch_op.drop_column('assigned_at')
