"""intake's outbox rows are not rewritten when they are published

A row is pending while ``outbox_pending`` holds its id (written by a trigger in the inserting
transaction, deleted by the relay's claim); the minutes of publication are kept in
``outbox_published`` for the retention window; ``published_at`` and its index go. What each
step does and why: ``shared.outbox.add_pending_table``.

Revision ID: intake_outbox_pending
Revises: intake_tickets_fillfactor
Create Date: 2026-12-06 20:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

from shared.outbox import add_pending_table, drop_pending_table

revision: str = "intake_outbox_pending"
down_revision: str | None = "intake_tickets_fillfactor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_pending_table(op)


def downgrade() -> None:
    drop_pending_table(op)
