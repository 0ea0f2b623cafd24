"""cells pages keep room for updates (PostgreSQL)

Every applied event moves about nine cells; each move rewrites a whole cell row. With full pages
the new version goes to another page and every index of ``eval_cells`` (seven) gets an entry for
it; with room left on the page it is a heap-only update that touches no index. New pages are
filled to 70 %; existing pages keep their fill until rewritten (``VACUUM FULL`` or a rebuild).
SQLite has no such setting.

Revision ID: 0006_apply
Revises: 0005
Create Date: 2026-12-05 03:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0006_apply'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE eval_cells SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE eval_cells RESET (fillfactor)")
