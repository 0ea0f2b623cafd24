"""narrower cells: the counters as INTEGER; the dropped grain out of the index predicates;
the facts' pages with room for their next versions (PostgreSQL)

Every applied event writes about eight cells, each a new version of the whole row: 33 ``BIGINT``
counters (264 bytes) where every counter but ``handling_centidays`` counts tickets, dispatches or
cases of one cell (a month's, at most: far below 2^31 at any city's size), so ``INTEGER``, as
the 61 bucket counters already were; the sum of hundredths of a working day stays ``BIGINT``,
and ``spot_received`` (``received`` on two grains) becomes ``INTEGER``. A typical cell row
takes ~510 bytes instead of ~650. The columns keep their order (the key, grain, period and
dimensions first: the key probes, index entries and the hash joins of the apply read them
without walking the counters). PostgreSQL cannot change a column's type in place without a
rewrite, and ``spot_received``, computed from ``received``, would have to be dropped and added
again, leaving a dropped column (a null in every row): the table is created anew beside the old
one, filled from it in the order its rows lie, and put in its place with its key, its indexes
and its storage settings; minutes for millions of rows, the table locked meanwhile. A value that
does not fit ``INTEGER`` stops the migration before anything changes, naming its column.

The department and town indexes are built without the grain ``month`` (dropped by 0013) in
their predicates.

``ticket_facts``, ``dispatch_facts``, ``case_facts`` and ``eval_contributions`` are rewritten
whole by each of a ticket's events; their pages, filled by the inserts, had no room for the new
version (2–6 % heap-only in the apply benchmark): new pages are now filled to 50 % (no page
rewritten; instant at any size).

SQLite: its integers take the room their values need whatever the declared type; only the two
indexes are built again.

Revision ID: 0014_narrow_cells
Revises: 0013_fewer_grains
Create Date: 2026-12-06 14:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_narrow_cells"
down_revision: str | None = "0013_fewer_grains"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the model does).
DIMENSIONS = (
    "kind",
    "department_code",
    "department_tier",
    "district_code",
    "town_code",
    "village_code",
    "grid_code",
    "channel",
    "category_top",
    "category_code",
    "handling_line",
    "enterprise",
)
COUNTERS = (
    *("tickets", "received", "dispatched", "completed", "completed_on_time", "callbacks"),
    *("callbacks_on_open", "resolved", "satisfied", "basically_satisfied", "dissatisfied"),
    *("one_time", "repeats", "returned", "transferred", "extended", "escalated", "supervised"),
    *("whistled", "mediated", "closed_village", "closed_town", "handling_centidays"),
    *("dispatches", "sign_due", "sign_on_time", "contact_due", "contact_on_time"),
    *("reports_due", "reports_on_time", "cases_opened", "cases_closed", "cases_succeeded"),
)
WIDE = "handling_centidays"  # a sum of handling times: BIGINT
BUCKETS = (
    *(f"h_{edge:04d}" for edge in (*range(25, 1001, 25), *range(1100, 3001, 100))),
    "h_over",
)
SPOT_RECEIVED = (
    "CASE WHEN grain IN ('month_category', 'month_place') THEN received ELSE 0 END"
)
FACTS = ("ticket_facts", "dispatch_facts", "case_facts", "eval_contributions")

# Department and town index predicates before (with the dropped ``month``) and after.
PREDICATES = {
    "ix_eval_cells_department": (
        "grain IN ('day', 'day_coarse', 'month')",
        "grain IN ('day', 'day_coarse')",
    ),
    "ix_eval_cells_town": (
        "grain IN ('day', 'day_coarse', 'month_place', 'month')",
        "grain IN ('day', 'day_coarse', 'month_place')",
    ),
}
INDEX_COLUMNS = {
    "ix_eval_cells_department": ["grain", "department_code", "period_start"],
    "ix_eval_cells_town": ["grain", "town_code", "period_start"],
}
OTHER_INDEXES = (  # (name, columns, predicate), as 0008 made them
    ("ix_eval_cells_period", "grain, period_start", None),
    (
        "ix_eval_cells_hotspots",
        "grain, period_start, kind, category_code, town_code, grid_code, spot_received",
        "grain IN ('month_category', 'month_place')",
    ),
    (
        "ix_eval_cells_places",
        "period_start, spot_received, grid_code, category_code, kind",
        "grain = 'month_place'",
    ),
)

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_COUNTER = "{} NOT NULL DEFAULT 0"


def _columns(narrow: bool) -> list[str]:
    """``eval_cells``' column definitions in their order: narrow (this revision) or as before."""

    def counter(name: str) -> str:
        return f"{name} {_COUNTER.format('integer' if narrow and name != WIDE else 'bigint')}"

    return [
        'cell_key varchar(40) COLLATE "C" NOT NULL',
        "grain varchar(16) NOT NULL",
        "period_start date NOT NULL",
        *(f"{name} varchar(64) NOT NULL" for name in DIMENSIONS),
        *(counter(name) for name in COUNTERS),
        *(f"{name} {_COUNTER.format('integer')}" for name in BUCKETS),
        f"spot_received {'integer' if narrow else 'bigint'}"
        f" GENERATED ALWAYS AS ({SPOT_RECEIVED}) STORED",
    ]


def _check_narrow_values() -> None:
    """Stop, naming the columns, if a counter to be narrowed holds a value INTEGER cannot."""
    narrowed = [name for name in COUNTERS if name != WIDE]
    checks = ", ".join(
        f"bool_or({name} NOT BETWEEN {_INT_MIN} AND {_INT_MAX})" for name in narrowed
    )
    row = op.get_bind().execute(sa.text(f"SELECT {checks} FROM eval_cells")).one()
    too_wide = [name for name, wide in zip(narrowed, row, strict=True) if wide]
    if too_wide:
        raise RuntimeError(
            "eval_cells cannot be narrowed: these counters hold values outside INTEGER's range "
            f"(±2^31): {', '.join(too_wide)}; this revision keeps only {WIDE} as BIGINT"
        )


def _relayout(narrow: bool) -> None:
    """``eval_cells`` created anew in the other layout, its rows copied in the order they lie,
    then its key, indexes and storage settings (the old table's) put back."""
    bind = op.get_bind()
    options = bind.execute(
        sa.text("SELECT reloptions FROM pg_class WHERE oid = 'eval_cells'::regclass")
    ).scalar()
    with_ = f" WITH ({', '.join(options)})" if options else ""
    op.execute(f"CREATE TABLE eval_cells_relaid ({', '.join(_columns(narrow))}){with_}")
    names = [c.split(" ", 1)[0] for c in _columns(narrow) if "GENERATED" not in c]
    listed = ", ".join(names)
    op.execute(f"INSERT INTO eval_cells_relaid ({listed}) SELECT {listed} FROM eval_cells")
    op.execute("DROP TABLE eval_cells")
    op.execute("ALTER TABLE eval_cells_relaid RENAME TO eval_cells")
    op.execute("ALTER TABLE eval_cells ADD CONSTRAINT eval_cells_pkey PRIMARY KEY (cell_key)")
    indexes = [
        *OTHER_INDEXES,
        *(
            (name, ", ".join(INDEX_COLUMNS[name]), after if narrow else before)
            for name, (before, after) in PREDICATES.items()
        ),
    ]
    for name, columns, where in indexes:
        predicate = f" WHERE {where}" if where else ""
        op.execute(f"CREATE INDEX {name} ON eval_cells ({columns}){predicate}")
    op.execute("ANALYZE eval_cells")


def _predicates(narrow: bool) -> None:
    """SQLite: the department and town indexes with the predicates of the other revision."""
    for name, (before, after) in PREDICATES.items():
        op.drop_index(name, table_name="eval_cells")
        op.create_index(
            name,
            "eval_cells",
            INDEX_COLUMNS[name],
            sqlite_where=sa.text(after if narrow else before),
        )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _predicates(narrow=True)
        return
    _check_narrow_values()
    _relayout(narrow=True)
    for table in FACTS:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _predicates(narrow=False)
        return
    for table in FACTS:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    _relayout(narrow=False)
