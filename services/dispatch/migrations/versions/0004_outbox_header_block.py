"""dispatch's outbox rows carry their headers as the relay sends them

One byte string a row (``header_block``) that the relay splits once, instead of JSON decoded
and every value encoded again for each record (~18 % of the relay's CPU); what the column is,
why adding it is safe on a live table and how old rows are read: ``shared.outbox
.add_header_block``.

Revision ID: dispatch_header_block
Revises: dispatch_audit_trail
Create Date: 2026-12-06 06:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

from shared.outbox import add_header_block, drop_header_block

revision: str = "dispatch_header_block"
down_revision: str | None = "dispatch_audit_trail"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_header_block(op)


def downgrade() -> None:
    drop_header_block(op)
