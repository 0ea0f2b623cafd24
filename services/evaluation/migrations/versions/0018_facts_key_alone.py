"""the facts keep no index but their key

``ticket_facts.department_code`` and ``dispatch_facts.ticket_id`` had an index each that no
read uses: the live apply writes the facts by key, the rebuild and the export read them whole
or in key order, and every committee figure is summed from the cells. Each index was an entry
more for every fact inserted, and a ticket's department is rewritten by its assignment (a
ticket whose receipt and assignment came in two fetches): a new entry in both of
``ticket_facts``' indexes, where without that index the rewrite is a heap-only update on its
page. Only the indexes go; no row changes.

Revision ID: 0018_facts_key_alone
Revises: 0017_outbox_pending
Create Date: 2026-12-07 01:35:00.000000
"""

from collections.abc import Sequence

from alembic import op

# (table, index, column): what no read uses.
UNREAD = (
    ("ticket_facts", "ix_ticket_facts_department_code", "department_code"),
    ("dispatch_facts", "ix_dispatch_facts_ticket_id", "ticket_id"),
)

revision: str = "0018_facts_key_alone"
down_revision: str | None = "0017_outbox_pending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table, index, _ in UNREAD:
        op.drop_index(index, table_name=table)


def downgrade() -> None:
    for table, index, column in UNREAD:
        op.create_index(index, table, [column])
