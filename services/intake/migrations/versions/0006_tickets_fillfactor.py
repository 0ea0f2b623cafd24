"""intake's tickets keep room on each page for their status updates

Every ticket's row is updated when dispatch's and mediation's events arrive (status, status
time, department, due time: no indexed column). A freshly filled page has no room for the new
version, so the update went to another page and wrote an entry into each of the table's seven
indexes; with free space on the page it is a heap-only update (HOT), and the old version is
pruned in place. PostgreSQL only (a storage parameter; new pages keep the room, existing ones
fill as before); SQLite has no such setting.

Revision ID: intake_tickets_fillfactor
Revises: intake_event_id_not_unique
Create Date: 2026-12-06 18:35:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "intake_tickets_fillfactor"
down_revision: str | None = "intake_event_id_not_unique"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A ticket's row is ~1.9 kB: half a page keeps room for each row's next version even when all
# rows of a page are updated in one transaction (a fetch of events about consecutive tickets),
# which leaves pruning nothing to free until it commits.
FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE tickets SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tickets RESET (fillfactor)")
