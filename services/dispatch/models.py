"""Dispatch's tables: the organisation, the tickets it routed, dispatches with their clocks, and
the audit trail (actions, extensions, escalations, whistles, rule versions, org changes).

API shapes live in ``schemas.py``. Every datetime column is ``AwareDateTime`` (UTC stored, aware
read back).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from shared.db import AwareDateTime, service_base
from shared.outbox import bus_tables

# mypy cannot use a class built at run time as a base; to the type checker the base is
# plain SQLModel (which is what ``service_base`` returns a subclass of, with its own metadata).
if TYPE_CHECKING:
    DispatchBase = SQLModel
else:
    DispatchBase = service_base("dispatch")

_BIGINT_PK = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

SUMMONS = "whistle_id IS NOT NULL"
"""The dispatches that are a whistle's summons (``ix_dispatches_whistle_id`` holds only them)."""


def _aware(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(AwareDateTime(), nullable=nullable, index=index),
    )


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


# --------------------------------------------------------------------------------------------
# The organisation


class AreaRow(DispatchBase, table=True):
    """One node of the city's area tree (city → district → town → village → grid)."""

    __tablename__ = "areas"

    code: str = Field(primary_key=True, max_length=32)
    parent_code: str | None = Field(default=None, index=True, max_length=32)
    tier: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    name_zh: str
    name_en: str
    address_prefix: str = ""
    grade: str | None = Field(default=None, max_length=4)
    # Grids carry their outline, so the tree (and its point index) can be rebuilt from the DB.
    polygon: list[Any] = _json(list)


class DepartmentRow(DispatchBase, table=True):
    """A unit handling appeals in its jurisdiction (``area_code``, an area subtree), for the
    categories on its responsibility list (as declared: a top-level code means all its leaves)."""

    __tablename__ = "departments"

    code: str = Field(primary_key=True, max_length=64)
    name_zh: str
    name_en: str
    tier: str = Field(max_length=16)  # city | district | town | village | grid
    area_code: str = Field(max_length=32)  # the jurisdiction
    responsibilities: list[str] = _json(list)
    flags: list[str] = _json(list)
    active: bool = True
    template: str | None = Field(default=None, max_length=32)  # the ``per:`` entry it came from
    revision: int = 0  # bumped on every admin change
    updated_at: datetime | None = _aware(nullable=True)


class DepartmentChange(DispatchBase, table=True):
    """The audit trail of admin changes to the organisation."""

    __tablename__ = "department_changes"

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_PK, primary_key=True))
    code: str = Field(index=True, max_length=64)
    change: str = Field(max_length=16)  # created | updated | deactivated | reactivated
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] = _json(dict)
    actor: str = Field(max_length=128)
    changed_at: datetime = _aware()


class MetaEntry(DispatchBase, table=True):
    """Small named values: the org chart's version and revision."""

    __tablename__ = "dispatch_meta"

    name: str = Field(primary_key=True, max_length=64)
    value: str
    updated_at: datetime = _aware()


class RuleSetRow(DispatchBase, table=True):
    """A routing rules file as activated; the newest row is the active version."""

    __tablename__ = "rule_sets"

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_PK, primary_key=True))
    version: str = Field(max_length=64, index=True)
    digest: str = Field(max_length=64)
    text: str = Field(sa_column=Column(Text, nullable=False))
    activated_by: str = Field(max_length=128)
    activated_at: datetime = _aware()


# --------------------------------------------------------------------------------------------
# Tickets and dispatches


class TicketRecord(DispatchBase, table=True):
    """What dispatch knows of a ticket: the facts it was routed on (re-routing needs them) and
    the departments that may not get it again (approved returns)."""

    __tablename__ = "tickets"

    ticket_id: str = Field(primary_key=True, max_length=32)
    channel: str = Field(max_length=64)
    category_code: str = Field(max_length=8)
    area_code: str | None = Field(default=None, max_length=32)
    title: str = ""
    facts: dict[str, Any] = _json(dict)
    excluded: list[str] = _json(list)
    case_id: str | None = Field(default=None, max_length=64)  # the mediation case, once opened
    received_at: datetime = _aware()
    routed_at: datetime = _aware()


class Dispatch(DispatchBase, table=True):
    """A ticket handed to one department (or offered to several in the grab pool, or a summons
    to report to a whistle), with its state; its clocks are ``DispatchClock`` rows."""

    __tablename__ = "dispatches"
    # A department's dispatches are found through the first index (its leading column): one of
    # the department's alone would be an entry more for every dispatch and serve no read the
    # pair does not. Only a summons has a whistle: the index of them holds nothing else
    # (migration 0007_fewer_dispatch_entries).
    __table_args__ = (
        Index("ix_dispatches_department_status", "department_code", "status"),
        Index("ix_dispatches_status_grab", "status", "grab_until"),
        Index(
            "ix_dispatches_whistle_id",
            "whistle_id",
            postgresql_where=text(SUMMONS),
            sqlite_where=text(SUMMONS),
        ),
    )

    dispatch_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(index=True, max_length=32)
    # None while the dispatch waits in the grab pool.
    department_code: str | None = Field(default=None, max_length=64)
    category_code: str = Field(max_length=8)
    channel: str = Field(max_length=64)
    area_code: str | None = Field(default=None, max_length=32)
    title: str = ""
    handling_line: str = Field(default="normal", max_length=32)
    time_limit_profile: str = Field(default="standard", max_length=32)
    mode: str = Field(default="assign", max_length=16)  # assign|grab|supervised|reroute|...
    status: str = Field(default="assigned", max_length=32)
    resume_status: str | None = Field(default=None, max_length=32)
    rule_id: str | None = None
    rules_version: str | None = Field(default=None, max_length=64)
    parent_dispatch_id: str | None = Field(default=None, max_length=64)
    whistle_id: str | None = Field(default=None, max_length=64)
    supervised: bool = False
    supervision_count: int = 0
    focused: bool = False
    escalation_level: int = 0
    whistles: int = 0
    extensions_granted: int = 0
    result: str | None = None
    resolved: bool | None = None
    version: int = 1  # bumped on every change: an ETag for clients
    assigned_at: datetime = _aware()
    grab_until: datetime | None = _aware(nullable=True)
    updated_at: datetime | None = _aware(nullable=True)
    closed_at: datetime | None = _aware(nullable=True)
    # Deadlines as first set (clock name → ISO time), for a quick look; the truth is the clocks.
    deadlines: dict[str, Any] = _json(dict)


class DispatchClock(DispatchBase, table=True):
    """One running clock of a dispatch. The scheduler escalates it when ``next_escalation_at``
    passes while it is still running; ``escalation_level`` is how far up it has gone."""

    __tablename__ = "dispatch_clocks"
    __table_args__ = (Index("ix_dispatch_clocks_due", "stopped_at", "next_escalation_at"),)

    dispatch_id: str = Field(primary_key=True, max_length=64)
    clock: str = Field(primary_key=True, max_length=16)
    started_at: datetime = _aware()
    due_at: datetime = _aware()
    original_due_at: datetime = _aware()
    stopped_at: datetime | None = _aware(nullable=True)
    escalation_level: int = 0
    next_escalation_at: datetime | None = _aware(nullable=True)


class GrabOffer(DispatchBase, table=True):
    """A department eligible to grab a pooled dispatch; ``rank`` 0 is assigned if nobody does."""

    __tablename__ = "grab_offers"

    dispatch_id: str = Field(primary_key=True, max_length=64)
    department_code: str = Field(primary_key=True, index=True, max_length=64)
    rank: int = 0


class DispatchAction(DispatchBase, table=True):
    """The audit trail: every action on a dispatch, who took it, and what it changed."""

    __tablename__ = "dispatch_actions"

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_PK, primary_key=True))
    dispatch_id: str = Field(index=True, max_length=64)
    ticket_id: str = Field(max_length=32)
    action: str = Field(max_length=32)
    actor_role: str = Field(max_length=16)
    actor_subject: str = Field(max_length=128)
    actor_department: str | None = Field(default=None, max_length=64)
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str | None = Field(default=None, max_length=32)
    note: str | None = None
    data: dict[str, Any] = _json(dict)
    at: datetime = _aware()


class ExtensionRequest(DispatchBase, table=True):
    """An extension asked for and its decision: the audit record of a moved clock."""

    __tablename__ = "extension_requests"

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_PK, primary_key=True))
    dispatch_id: str = Field(index=True, max_length=64)
    clock: str = Field(max_length=16)
    amount: float
    unit: str = Field(max_length=16)
    reason: str
    status: str = Field(default="pending", max_length=16)  # pending|approved|denied|moot
    requested_by: str = Field(max_length=128)
    requested_at: datetime = _aware()
    decided_by: str | None = Field(default=None, max_length=128)
    decided_at: datetime | None = _aware(nullable=True)
    decision_note: str | None = None
    old_due_at: datetime | None = _aware(nullable=True)
    new_due_at: datetime | None = _aware(nullable=True)


class Escalation(DispatchBase, table=True):
    """One step up the tiers for one missed clock. The unique key makes it happen once, however
    many scheduler replicas or restarts race for it."""

    __tablename__ = "escalations"
    __table_args__ = (
        UniqueConstraint("dispatch_id", "clock", "level", name="uq_escalations_step"),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_PK, primary_key=True))
    dispatch_id: str = Field(index=True, max_length=64)
    ticket_id: str = Field(max_length=32)
    clock: str = Field(max_length=16)
    level: int
    department_code: str = Field(max_length=64)
    target_department_code: str | None = Field(default=None, index=True, max_length=64)
    due_at: datetime = _aware()
    escalated_at: datetime = _aware()


class Whistle(DispatchBase, table=True):
    """A whistle (吹哨) blown on a ticket; the summoned departments' dispatches point at it."""

    __tablename__ = "whistles"

    whistle_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(index=True, max_length=32)
    reason: str
    blown_by_role: str = Field(max_length=16)
    blown_by_subject: str = Field(max_length=128)
    blown_by_department: str | None = Field(default=None, max_length=64)
    source_dispatch_id: str | None = Field(default=None, max_length=64)
    blown_at: datetime = _aware()


metadata = DispatchBase.metadata
outbox_table, inbox_table, bus_state_table = bus_tables(metadata)
