"""a dispatch enters two indexes fewer

``ix_dispatches_department_code`` repeated the leading column of
``ix_dispatches_department_status``, which serves every read by department; it goes. Only a
whistle's summons has a ``whistle_id``, yet every dispatch entered ``ix_dispatches_whistle_id``
(its NULL): the index now holds the summonses alone, which is all its one read (a whistle's
board, by ``whistle_id =``) looks for. Every routed ticket's dispatch was two index entries of
its fetch's write more. No row changes.

Revision ID: dispatch_fewer_entries
Revises: dispatch_outbox_pending
Create Date: 2026-12-07 01:35:00.000000
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "dispatch_fewer_entries"
down_revision: str | None = "dispatch_outbox_pending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_dispatches_department_code", table_name="dispatches")
    op.drop_index("ix_dispatches_whistle_id", table_name="dispatches")
    op.create_index(
        "ix_dispatches_whistle_id",
        "dispatches",
        ["whistle_id"],
        postgresql_where=text("whistle_id IS NOT NULL"),
        sqlite_where=text("whistle_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_dispatches_whistle_id", table_name="dispatches")
    op.create_index("ix_dispatches_whistle_id", "dispatches", ["whistle_id"])
    op.create_index("ix_dispatches_department_code", "dispatches", ["department_code"])
