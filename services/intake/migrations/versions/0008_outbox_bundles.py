"""intake's outbox rows may be bundles: a batch file's events in one row

``records`` on the outbox and on its pending rows (how many events a bundle holds; NULL in a
row of one event), the payloads stored whole, the pending trigger copying ``records``. What
each step does and why: ``shared.outbox.add_bundles``; the rows: ``shared.outbox.bundle_row``.

Revision ID: intake_outbox_bundles
Revises: intake_outbox_pending
Create Date: 2026-12-07 12:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

from shared.outbox import add_bundles, drop_bundles

revision: str = "intake_outbox_bundles"
down_revision: str | None = "intake_outbox_pending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_bundles(op)


def downgrade() -> None:
    drop_bundles(op)
