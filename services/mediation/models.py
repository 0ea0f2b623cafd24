"""Mediation's tables: cases and their parties, the mediator pool, sessions with the slot claims
that keep them from double-booking, agreements with terms and signatures, follow-up visits, and
the backlog board (揭榜挂帅).

API shapes live in ``schemas.py``. Every datetime column is ``AwareDateTime`` (UTC stored, aware
read back); money is ``Numeric``, never a float.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, Index, Numeric, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.db import AwareDateTime, service_base
from shared.outbox import bus_tables

# mypy cannot use a class built at run time as a base; to the type checker the base is
# plain SQLModel (which is what ``service_base`` returns a subclass of, with its own metadata).
if TYPE_CHECKING:
    MediationBase = SQLModel
else:
    MediationBase = service_base("mediation")


def _aware(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(AwareDateTime(), nullable=nullable, index=index))


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


def _text() -> Any:
    return Field(default="", sa_column=Column(Text, nullable=False))


class Case(MediationBase, table=True):
    """A dispute case: from a dispatched ticket or a walk-in, held by a centre at one level."""

    __tablename__ = "cases"
    __table_args__ = (Index("ix_cases_due", "status", "due_at"),)

    case_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str | None = Field(default=None, index=True, unique=True, max_length=32)
    category_code: str | None = Field(default=None, max_length=8)
    status: str = Field(default="accepted", max_length=32)
    opened_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    origin: str = Field(default="dispatch", max_length=16)  # dispatch | walk_in
    dispute_type: str = Field(default="other", max_length=32)
    level: str = Field(default="town", max_length=16)  # of the centre that holds it now
    area_code: str | None = Field(default=None, max_length=32)  # where the dispute is
    # The area of the holding centre: moves up with every escalation.
    centre_area_code: str | None = Field(default=None, index=True, max_length=32)
    centre_code: str | None = Field(default=None, max_length=64)  # dispatch's unit, when known
    summary: str = _text()
    opened_by: str | None = Field(default=None, max_length=64)
    level_since: datetime | None = _aware(nullable=True)
    due_at: datetime | None = _aware(nullable=True)  # the holding level's time limit
    board_due_at: datetime | None = _aware(nullable=True)  # open this long: the backlog board
    breaches: int = 0
    escalations: int = 0
    outcome: str | None = Field(default=None, max_length=16)
    ended_level: str | None = Field(default=None, max_length=16)
    closed_at: datetime | None = _aware(nullable=True)
    updated_at: datetime | None = _aware(nullable=True)


class CaseTransition(MediationBase, table=True):
    """The audit trail: every action applied to a case, by whom."""

    __tablename__ = "case_transitions"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True, max_length=64)
    action: str = Field(max_length=16)
    from_status: str = Field(max_length=32)
    to_status: str = Field(max_length=32)
    actor: str = Field(max_length=128)
    note: str = _text()
    at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))


class Party(MediationBase, table=True):
    """A party to a case. Contact data is kept clear for the case's mediators and masked
    (shared/pii.py) for everyone else; ``identity_key`` matches the same person across cases."""

    __tablename__ = "parties"

    party_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(index=True, max_length=64)
    role: str = Field(max_length=16)  # applicant | respondent | third_party
    kind: str = Field(max_length=16)  # person | organisation
    name: str = Field(max_length=200)
    name_masked: str = Field(max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    phone_masked: str | None = Field(default=None, max_length=40)
    id_number: str | None = Field(default=None, max_length=18)
    id_number_masked: str | None = Field(default=None, max_length=18)
    address: str | None = Field(default=None, max_length=300)
    identity_key: str = Field(index=True, max_length=80)


class Mediator(MediationBase, table=True):
    """A member of the mediator pool (矛盾纠纷人才库); ``mediator_id`` is the caller's subject."""

    __tablename__ = "mediators"

    mediator_id: str = Field(primary_key=True, max_length=48)
    name: str = Field(max_length=100)
    kind: str = Field(max_length=32)
    level: str = Field(max_length=16)
    specialities: list[str] = _json(list)
    centres: list[str] = _json(list)  # centre unit codes served
    availability: list[dict[str, Any]] = _json(list)  # [{weekday, start, end}]
    max_open_cases: int = 10
    active: bool = True


class MediatorRelation(MediationBase, table=True):
    """A relation a mediator declared to a person or organisation (a conflict of interest)."""

    __tablename__ = "mediator_relations"

    id: int | None = Field(default=None, primary_key=True)
    mediator_id: str = Field(index=True, max_length=48)
    identity_key: str = Field(index=True, max_length=80)
    relation: str = Field(max_length=100)
    declared_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))


class CaseMediator(MediationBase, table=True):
    """A mediator on a case; the lead answers for it."""

    __tablename__ = "case_mediators"
    __table_args__ = (UniqueConstraint("case_id", "mediator_id", name="uq_case_mediator"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True, max_length=64)
    mediator_id: str = Field(index=True, max_length=48)
    lead: bool = True
    assigned_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    assigned_by: str = Field(max_length=128)


class MediationSession(MediationBase, table=True):
    """A session: at a room, a village room or over a video link."""

    __tablename__ = "sessions"

    session_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(index=True, max_length=64)
    mediator_id: str = Field(max_length=48)
    venue: str = Field(max_length=16)  # room | village_room | video
    room_code: str | None = Field(default=None, max_length=64)
    video_link: str | None = Field(default=None, max_length=300)
    starts_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    ends_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    status: str = Field(default="scheduled", max_length=16)  # scheduled | held | cancelled
    participants: list[dict[str, Any]] = _json(list)  # [{party_id, attended}]
    notes: str = _text()
    outcome: str | None = Field(default=None, max_length=16)  # continue | agreement | failed


class SlotClaim(MediationBase, table=True):
    """One quarter hour of a mediator or a room held by a session. The unique key is what makes
    double-booking impossible, even for two requests racing on different connections."""

    __tablename__ = "slot_claims"
    __table_args__ = (UniqueConstraint("resource", "slot_at", name="uq_slot_claims_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    resource: str = Field(max_length=96)  # mediator:<id> | room:<code>
    slot_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    session_id: str = Field(index=True, max_length=64)


class Agreement(MediationBase, table=True):
    """A mediation agreement, written or verbal, and its court confirmation (司法确认)."""

    __tablename__ = "agreements"

    agreement_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=16)  # written | verbal
    agreed_on: date
    summary: str = _text()
    party_ids: list[str] = _json(list)
    recorded_by: str = Field(max_length=128)
    recorded_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    court_status: str = Field(default="none", max_length=16)  # none|requested|granted|refused
    court: str | None = Field(default=None, max_length=200)
    court_reference: str | None = Field(default=None, max_length=100)


class AgreementTerm(MediationBase, table=True):
    """One obligation of an agreement: who owes what by when."""

    __tablename__ = "agreement_terms"

    term_id: str = Field(primary_key=True, max_length=72)
    agreement_id: str = Field(index=True, max_length=64)
    obligor_party_id: str = Field(max_length=64)
    action: str = Field(max_length=500)
    amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(14, 2), nullable=True))
    due_on: date
    status: str = Field(default="pending", max_length=16)  # pending | fulfilled | breached
    checked_at: datetime | None = _aware(nullable=True)


class Signature(MediationBase, table=True):
    """A party's signature on a written agreement (or, on a verbal one, their recorded assent)."""

    __tablename__ = "agreement_signatures"
    __table_args__ = (UniqueConstraint("agreement_id", "party_id", name="uq_signature"),)

    id: int | None = Field(default=None, primary_key=True)
    agreement_id: str = Field(index=True, max_length=64)
    party_id: str = Field(max_length=64)
    signed_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))


class FollowUp(MediationBase, table=True):
    """A follow-up visit (回访) after an agreement: scheduled, then recorded."""

    __tablename__ = "follow_ups"

    follow_up_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(index=True, max_length=64)
    agreement_id: str = Field(max_length=64)
    due_on: date
    status: str = Field(default="scheduled", max_length=16)  # scheduled | done
    visited_at: datetime | None = _aware(nullable=True)
    note: str = _text()


class BoardPost(MediationBase, table=True):
    """A hard case on the backlog board (揭榜挂帅); one post per case or ticket."""

    __tablename__ = "board_posts"

    board_id: str = Field(primary_key=True, max_length=64)
    case_id: str | None = Field(default=None, unique=True, max_length=64)
    ticket_id: str | None = Field(default=None, unique=True, max_length=32)
    origin: str = Field(max_length=16)  # mediation | dispatch
    reason: str = Field(max_length=300)
    area_code: str | None = Field(default=None, max_length=32)
    posted_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    status: str = Field(default="posted", max_length=16)  # posted | claimed | cleared | abandoned
    lead_claimant: str | None = Field(default=None, max_length=48)
    due_on: date | None = None
    outcome_note: str = _text()
    cleared_at: datetime | None = _aware(nullable=True)


class BoardClaim(MediationBase, table=True):
    """An official's claim on a post: the one lead claimant, or a co-claimant."""

    __tablename__ = "board_claims"
    __table_args__ = (UniqueConstraint("board_id", "claimant_id", name="uq_board_claimant"),)

    id: int | None = Field(default=None, primary_key=True)
    board_id: str = Field(index=True, max_length=64)
    claimant_id: str = Field(max_length=48)
    rank: str | None = Field(default=None, max_length=64)
    co_claimant: bool = False
    claimed_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))


class BoardNote(MediationBase, table=True):
    """A progress note on a claimed post."""

    __tablename__ = "board_notes"

    id: int | None = Field(default=None, primary_key=True)
    board_id: str = Field(index=True, max_length=64)
    author: str = Field(max_length=48)
    note: str = _text()
    at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))


class TicketWatch(MediationBase, table=True):
    """What mediation counts of dispatch's tickets to spot board candidates (re-routings)."""

    __tablename__ = "ticket_watch"

    ticket_id: str = Field(primary_key=True, max_length=32)
    reroutes: int = 0
    area_code: str | None = Field(default=None, max_length=32)


metadata = MediationBase.metadata
outbox_table, inbox_table, bus_state_table = bus_tables(metadata)
