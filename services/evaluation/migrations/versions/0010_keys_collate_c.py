"""keys compared as bytes (PostgreSQL); the cells vacuumed and analysed by their own thresholds

The database's collation may be a linguistic one: ``C.UTF-8`` is one to PostgreSQL 15, which
then compares every text key through ``strcoll`` (copying both strings first), some 12 % of the
backend's CPU in the live apply with the B-tree comparisons above it. The keys the apply probes
— cell keys, fact keys, event ids, ticket, dispatch and case ids — are now ``COLLATE "C"``. No
query orders them for display: the auditors' export and the rebuild's ledger read page by key,
whose ``>`` and ``ORDER BY`` use the same collation, and the ids the services make are ASCII,
ordered alike in ``C`` and ``C.UTF-8``. Only a collation changes: no table is rewritten, the
indexes holding these columns are built again (the table locked meanwhile; seconds for a few
million rows, README's "Commands").

``eval_cells`` (3.3 M rows beside 10 M facts, a few thousand moved a second) would be vacuumed
only after a fifth of its rows were dead and analysed after a tenth changed: its own thresholds
now (``models.CELLS_AUTOVACUUM``, frozen below). SQLite compares bytes and has no autovacuum:
nothing changes there.

Revision ID: 0010_collate
Revises: 0009_fill50
Create Date: 2026-12-06 03:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_collate"
down_revision: str | None = "0009_fill50"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the model does): table → (column, length).
KEYS: dict[str, list[tuple[str, int]]] = {
    "eval_cells": [("cell_key", 40)],
    "eval_contributions": [("fact_key", 80)],
    "eval_ledger": [("event_id", 64), ("fact_key", 80)],
    "ticket_facts": [("ticket_id", 32)],
    "dispatch_facts": [("dispatch_id", 64), ("ticket_id", 32)],
    "case_facts": [("case_id", 64)],
}
AUTOVACUUM = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "20000",
    "autovacuum_vacuum_insert_scale_factor": "0.05",
    "autovacuum_vacuum_insert_threshold": "50000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_analyze_threshold": "20000",
}


def _collate(collation: str) -> None:
    for table, columns in KEYS.items():
        # one statement a table: its indexes are built once
        changes = ", ".join(
            f'ALTER COLUMN "{name}" TYPE varchar({length}) COLLATE "{collation}"'
            for name, length in columns
        )
        op.execute(f'ALTER TABLE "{table}" {changes}')


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _collate("C")
    settings = ", ".join(f"{name} = {value}" for name, value in AUTOVACUUM.items())
    op.execute(f"ALTER TABLE eval_cells SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE eval_cells RESET ({', '.join(AUTOVACUUM)})")
    _collate("default")
