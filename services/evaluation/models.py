"""Evaluation's projections, built from the event stream and rebuildable from it.

- ``ledger``: every event evaluation folds, once by event id, keyed by the ticket (or mediation
  case) it is about; a fact is always refolded from its whole ledger (``facts.py``).
- ``ticket_facts`` / ``dispatch_facts`` / ``case_facts``: the facts (no personal data).
- ``eval_cells``: the pre-aggregated counters (and handling-time bucket counters, for the p90)
  every committee query sums (``cells.py``), in roll-ups by day and by month;
  ``eval_contributions`` remembers what each fact added so a refold moves exactly its own share.
- ``eval_proposals``: proactive-work proposals already emitted (one per hot spot and period).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Computed,
    Date,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlmodel import Field, SQLModel

from services.evaluation.metrics_registry import BUCKETS, COUNTERS
from shared.db import AwareDateTime, Key, service_base
from shared.outbox import bus_tables

# mypy cannot use a class built at run time as a base; to the type checker the base is
# plain SQLModel (which is what ``service_base`` returns a subclass of, with its own metadata).
if TYPE_CHECKING:
    EvaluationBase = SQLModel
else:
    EvaluationBase = service_base("evaluation")


def _at() -> Any:
    """An optional aware timestamp column (each call its own Column object)."""
    return Field(default=None, sa_column=Column(AwareDateTime()))


def _code(length: int = 64) -> Any:
    return Field(default=None, max_length=length)


# A fact and its contributions are rewritten whole by each of its ticket's events: pages filled
# to half leave room for the next version on the same page, a heap-only update that adds no
# index entry (migration 0014_narrow_cells). The facts have no index but their key: every read
# of them is by key or whole (the committee reads the cells), and an index on a column the fold
# changes (a ticket's department) made each such rewrite a new entry in every index
# (migration 0018_facts_key_alone).
FACTS_FILL = {"fillfactor": 50}
FACTS_ARGS = {"postgresql_with": FACTS_FILL}


class TicketFact(EvaluationBase, table=True):
    """One row per ticket (appeal or proactive dispatch), refolded from all its events."""

    __tablename__ = "ticket_facts"
    __table_args__ = FACTS_ARGS

    ticket_id: str = Field(primary_key=True, max_length=32, sa_type=Key(32))
    kind: str = Field(default="appeal", max_length=16)
    channel: str | None = _code()
    category_code: str | None = _code(8)
    area_code: str | None = _code(16)
    district_code: str | None = _code(16)
    town_code: str | None = _code(16)
    village_code: str | None = _code(16)
    grid_code: str | None = _code(16)
    is_enterprise: bool = False
    urgency: str | None = _code(16)
    is_repeat: bool = False
    time_limit_profile: str | None = _code(32)
    received_at: datetime | None = _at()
    # the earliest assignment's time; department and line come from the latest assignment
    # until the ticket completes, then from the dispatch that closed it
    dispatched_at: datetime | None = _at()
    assigned_at: datetime | None = _at()
    signed_at: datetime | None = _at()
    first_contact_at: datetime | None = _at()
    completed_at: datetime | None = _at()
    department_code: str | None = _code()
    department_tier: str | None = _code(16)
    handling_line: str | None = _code(32)
    mode: str | None = _code(16)
    completed: bool = False
    completed_late: bool | None = None
    handling_centidays: int | None = None
    dispatches: int = 0
    returns: int = 0
    transfers: int = 0
    extensions: int = 0
    escalations: int = 0
    max_escalation_level: int = 0
    whistles: int = 0
    supervised: bool = False
    focused: bool = False
    reopened: bool = False
    mediated: bool = False
    # the counted callback (latest revision received after completion) or, before completion,
    # the latest revision, kept but not counted (``callback_counted`` False)
    feedback_id: str | None = _code(48)
    feedback_revision: int | None = None
    resolved: bool | None = None
    satisfaction: str | None = _code(32)
    callback_counted: bool = False


class DispatchFact(EvaluationBase, table=True):
    """One department's share of a ticket (a ticket can have several: transfers, summonses)."""

    __tablename__ = "dispatch_facts"
    __table_args__ = FACTS_ARGS

    dispatch_id: str = Field(primary_key=True, max_length=64, sa_type=Key(64))
    ticket_id: str = Field(max_length=32, sa_type=Key(32))
    department_code: str | None = _code()
    department_tier: str | None = _code(16)
    handling_line: str | None = _code(32)
    mode: str | None = _code(16)
    summoned: bool = False
    state: str = Field(default="assigned", max_length=16)
    assigned_at: datetime | None = _at()
    signed_at: datetime | None = _at()
    sign_late: bool | None = None
    sign_escalated: bool = False
    contacted_at: datetime | None = _at()
    contact_late: bool | None = None
    contact_escalated: bool = False
    completed_at: datetime | None = _at()
    complete_late: bool | None = None
    completed_via: str | None = _code(16)
    resolved: bool | None = None
    escalations: int = 0
    max_escalation_level: int = 0
    report_on_time: bool | None = None


class CaseFact(EvaluationBase, table=True):
    """One mediation case, from a ticket or a walk-in (no ticket)."""

    __tablename__ = "case_facts"
    __table_args__ = FACTS_ARGS

    case_id: str = Field(primary_key=True, max_length=64, sa_type=Key(64))
    ticket_id: str | None = _code(32)
    origin: str | None = _code(16)
    dispute_type: str | None = _code(32)
    category_code: str | None = _code(8)
    area_code: str | None = _code(16)
    district_code: str | None = _code(16)
    town_code: str | None = _code(16)
    level: str | None = _code(16)
    opened_at: datetime | None = _at()
    closed_at: datetime | None = _at()
    outcome: str | None = _code(16)
    escalations: int = 0


metadata = EvaluationBase.metadata

ledger_table = Table(
    "eval_ledger",
    metadata,
    Column("event_id", Key(64), primary_key=True),
    Column("fact_key", Key(80), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("occurred_at", AwareDateTime(), nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_eval_ledger_fact", "fact_key"),
)

contributions_table = Table(
    "eval_contributions",
    metadata,
    Column("fact_key", Key(80), primary_key=True),
    Column("cells", JSON, nullable=False),
    postgresql_with=FACTS_FILL,
)

# The dimensions of a cell, in key order; "" stands for "not known" (so keys never hold NULL).
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

# The grains the department and town indexes cover: the one holding about a row per ticket
# ("day"), the one read a day at a time over weeks and ranges ("day_coarse") and, for towns,
# the place cells (about fifty thousand a month at 10 M facts). On every other grain a period
# holds a few thousand cells at most, read through the period index and filtered. A query names
# its grain inline (not bound) for the planner to match these predicates. ("month", dropped in
# 0013, left these predicates in 0014_narrow_cells.)
DEPARTMENT_INDEXED = "grain IN ('day', 'day_coarse')"
TOWN_INDEXED = "grain IN ('day', 'day_coarse', 'month_place')"

# Every summed column of a cell: the published counters, then the handling-time buckets.
CELL_COLUMNS = (*COUNTERS, *BUCKETS)

# The hot-spot reads rank by appeals received, from indexes alone. An index holding ``received``
# itself would keep every move that changes it, on any grain, from being a heap-only update
# (PostgreSQL compares the indexed columns' values); this copy, computed by the database, is
# ``received`` on the two hot-spot grains and 0 on the others, whose moves it never changes.
HOTSPOT_GRAINS = "grain IN ('month_category', 'month_place')"
SPOT_RECEIVED = f"CASE WHEN {HOTSPOT_GRAINS} THEN received ELSE 0 END"

# ``eval_cells`` holds millions of rows (3.3 M beside 10 M facts) and the live apply moves a few
# thousand a second; the defaults would vacuum it after 20 % of its rows are dead (660,000
# versions, its key index doubled meanwhile) and analyse it after 10 % changed (the new day's
# cells unknown to the planner till then). Thresholds in rows instead: vacuumed every 20,000
# dead versions and 1 % of the table, new cells' pages marked visible after 50,000 inserts and
# 5 %, analysed after 20,000 and 2 %; a fetch's cells are found on pages in memory again.
CELLS_AUTOVACUUM = {
    "autovacuum_vacuum_scale_factor": 0.01,
    "autovacuum_vacuum_threshold": 20000,
    "autovacuum_vacuum_insert_scale_factor": 0.05,
    "autovacuum_vacuum_insert_threshold": 50000,
    "autovacuum_analyze_scale_factor": 0.02,
    "autovacuum_analyze_threshold": 20000,
}

# The counters that are sums of amounts rather than counts of tickets, dispatches or cases, and may
# pass 2^31 in one cell: ``BIGINT``. Every other counter counts within one cell (a month's at
# most): ``INTEGER``, 4 bytes a column of the ~8 rows an applied event writes anew.
WIDE_COUNTERS = frozenset({"handling_centidays"})


def _counter(name: str) -> Column[Any]:
    wide = name in WIDE_COUNTERS
    return Column(name, BigInteger if wide else Integer, nullable=False, server_default="0")


cells_table = Table(
    "eval_cells",
    metadata,
    Column("cell_key", Key(40), primary_key=True),
    Column("grain", String(16), nullable=False),
    Column("period_start", Date, nullable=False),
    *(Column(name, String(64), nullable=False) for name in DIMENSIONS),
    *(_counter(name) for name in COUNTERS),
    *(Column(name, Integer, nullable=False, server_default="0") for name in BUCKETS),
    Column("spot_received", Integer, Computed(SPOT_RECEIVED, persisted=True)),
    # Every read sums one grain over a period: this index bounds it to the period's cells.
    Index("ix_eval_cells_period", "grain", "period_start"),
    # A department's or a town's cells among a period's many, on the grains named above. No
    # index holds a counter (``spot_received`` moves on the hot-spot grains alone), so a move
    # that changes only counters can be a heap-only update (migration 0008; which query reads
    # which index: docs/evaluation.md).
    Index(
        "ix_eval_cells_department",
        "grain",
        "department_code",
        "period_start",
        postgresql_where=text(DEPARTMENT_INDEXED),
        sqlite_where=text(DEPARTMENT_INDEXED),
    ),
    Index(
        "ix_eval_cells_town",
        "grain",
        "town_code",
        "period_start",
        postgresql_where=text(TOWN_INDEXED),
        sqlite_where=text(TOWN_INDEXED),
    ),
    # Hot spots read the appeals received per category and town (or grid) and month from this
    # index alone, without touching the wide rows ...
    Index(
        "ix_eval_cells_hotspots",
        "grain",
        "period_start",
        "kind",
        "category_code",
        "town_code",
        "grid_code",
        "spot_received",
        postgresql_where=text(HOTSPOT_GRAINS),
        sqlite_where=text(HOTSPOT_GRAINS),
    ),
    # ... and a month's recurring places, busiest first, from the first hundred entries.
    Index(
        "ix_eval_cells_places",
        "period_start",
        "spot_received",
        "grid_code",
        "category_code",
        "kind",
        postgresql_where=text("grain = 'month_place'"),
        sqlite_where=text("grain = 'month_place'"),
    ),
    # Room on each page for its cells' next versions: a move is then a heap-only update that
    # touches none of the indexes above (migrations 0006_apply, 0009_fill50); vacuumed and
    # analysed by its own thresholds, not by a fifth of its rows (migration 0010_collate).
    postgresql_with={"fillfactor": 50, **CELLS_AUTOVACUUM},
)

proposals_table = Table(
    "eval_proposals",
    metadata,
    Column("proposal_id", String(64), primary_key=True),
    Column("category_code", String(8), nullable=False),
    Column("area_code", String(16), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("emitted_at", AwareDateTime(), nullable=False),
)


class Summary(BaseModel):
    """Headline counts for the committee, each a count of tickets."""

    received: int  # with their TicketReceived
    dispatched: int  # assigned at least once
    awaiting_dispatch: int  # received and not yet assigned
    feedback: int  # with at least one callback


outbox_table, inbox_table, bus_state_table = bus_tables(metadata)
