"""evaluation's outbox and audit trail without a unique index on event_id

No statement reads either table by event id, and no writer relies on a clash: the two indexes
were upkeep on every event written. Why it is safe and what each database does:
``shared.outbox.drop_event_id_unique``.

Revision ID: 0015_event_id_not_unique
Revises: 0014_narrow_cells
Create Date: 2026-12-06 17:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

from shared.outbox import drop_event_id_unique, restore_event_id_unique

revision: str = "0015_event_id_not_unique"
down_revision: str | None = "0014_narrow_cells"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_event_id_unique(op)


def downgrade() -> None:
    restore_event_id_unique(op)
