"""intake's ticket keys compared as bytes (PostgreSQL)

Every ticket stored writes its id, its channel and external id, its citizen hash, grid and
address key into B-tree indexes, and repeat detection and a batch's stored-id look-up probe
them; under a linguistic collation (``C.UTF-8`` is one to PostgreSQL 15, ``en_US.utf8`` the
official image's) each comparison copies both strings and calls ``strcoll``. These columns are
now ``COLLATE "C"`` (``shared.db.Key``). They are compared for equality, or paged by
``received_at`` then ``ticket_id`` (ASCII, ordered alike): no reader sees an order change. Only a
collation changes: no table is rewritten; the indexes holding these columns are built again, the
table locked meanwhile (seconds for a few million tickets, README's "Commands"). SQLite compares
bytes already: nothing changes there.

Revision ID: intake_keys_collate_c
Revises: intake_outbox_bundles
Create Date: 2026-12-07 18:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "intake_keys_collate_c"
down_revision: str | None = "intake_outbox_bundles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the model does): column → length.
KEYS: dict[str, int] = {
    "ticket_id": 32,
    "channel": 64,
    "external_id": 128,
    "citizen_hash": 64,
    "grid_code": 32,
    "address_key": 500,
}


def _collate(collation: str) -> None:
    # one statement: the table's indexes are built once
    changes = ", ".join(
        f'ALTER COLUMN "{name}" TYPE varchar({length}) COLLATE "{collation}"'
        for name, length in KEYS.items()
    )
    op.execute(f"ALTER TABLE tickets {changes}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _collate("C")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _collate("default")
