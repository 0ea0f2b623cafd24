"""cells pages keep room for four new versions (PostgreSQL)

A live fetch of events moves a few thousand cells, and the cells a fetch creates together lie on
the same pages and are moved together by the later fetches of the same tickets. At 70 % fill a
page of about five cells had room for two new versions: the others went to another page as
updates that are not heap-only, each adding an entry to every index of ``eval_cells`` (24 % of
the updates in the apply benchmark; 10 % at 50 %, 0.4 % at 40 %). New pages are now filled to
50 %. No page is rewritten: existing pages keep their fill until the table is rewritten (a
rebuild, ``VACUUM FULL``), so the migration is instant on a table of any size. A rebuilt table
takes more pages (4.3 against 3.5 GB for the cells of 10 M facts). SQLite has no such setting.

Revision ID: 0009_fill50
Revises: 0008_indexes
Create Date: 2026-12-06 03:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_fill50"
down_revision: str | None = "0008_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE eval_cells SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE eval_cells SET (fillfactor = 70)")
