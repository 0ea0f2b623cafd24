"""Mediation's API shapes: request bodies (strict: unknown fields are refused) and answers."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.events.mediation import AgreementKind, DisputeType, Level, Referral, Venue

# Text reaches SQL and audit rows: no control characters on one line (PostgreSQL refuses a NUL
# in a text parameter; a newline has no place in a name), no NUL in notes that span lines.
_LINE = r"^[^\x00-\x1f\x7f]*$"
_PARAGRAPHS = r"^[^\x00]*$"


def line(max_length: int, *, min_length: int = 1) -> StringConstraints:
    """One line of text: stripped, bounded, printable."""
    return StringConstraints(
        strip_whitespace=True, min_length=min_length, max_length=max_length, pattern=_LINE
    )


def paragraphs(max_length: int, *, min_length: int = 0) -> StringConstraints:
    """Free text that may span lines."""
    return StringConstraints(
        strip_whitespace=True, min_length=min_length, max_length=max_length, pattern=_PARAGRAPHS
    )


Text = Annotated[str, paragraphs(2000, min_length=1)]
Name = Annotated[str, line(100)]
Code = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[\w.:-]+$"),
]
# A court's case reference, e.g. (2026)浙0602民特123号.
Reference = Annotated[str, line(100)]
AreaCode = Annotated[str, StringConstraints(pattern=r"^\d{6}(\d{3}){0,3}$")]
PartyRole = Literal["applicant", "respondent", "third_party"]
PartyKind = Literal["person", "organisation"]
MediatorKind = Literal[
    "full_time",
    "part_time",
    "lawyer",
    "psychologist",
    "retired_judge",
    "community_figure",
    "trade_association",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartyIn(_Body):
    role: PartyRole
    kind: PartyKind = "person"
    name: Annotated[str, line(200)]
    phone: Annotated[str, line(40)] | None = None
    id_number: Annotated[str, line(18)] | None = None
    address: Annotated[str, line(300)] | None = None


class WalkInCase(_Body):
    """A case opened at a centre or a village room, with no ticket."""

    dispute_type: DisputeType
    level: Level
    area_code: AreaCode
    category_code: Annotated[str, StringConstraints(pattern=r"^\d{2,4}$")] | None = None
    summary: Text
    parties: list[PartyIn] = Field(default_factory=list, max_length=50)


class AssignBody(_Body):
    mediator_id: Code
    lead: bool = True


class FailBody(_Body):
    reason: Text
    referral: Referral = "none"


class ReasonBody(_Body):
    reason: Text | None = None


class WeeklySlot(_Body):
    weekday: Annotated[int, Field(ge=1, le=7)]  # ISO: 1 = Monday
    start: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")]


class MediatorIn(_Body):
    mediator_id: Code
    name: Name
    kind: MediatorKind
    level: Level
    specialities: list[DisputeType] = Field(default_factory=list, max_length=10)
    centres: list[Code] = Field(default_factory=list, max_length=20)
    availability: list[WeeklySlot] = Field(default_factory=list, max_length=50)
    max_open_cases: Annotated[int, Field(ge=1, le=500)] = 10


class AvailabilityBody(_Body):
    availability: list[WeeklySlot] = Field(max_length=50)


class RelationIn(_Body):
    """A relation a mediator declares: to a person or organisation, named with what identifies
    it (a phone or an ID number; a name alone for an organisation)."""

    relation: Name
    kind: PartyKind = "person"
    name: Annotated[str, line(200)]
    phone: Annotated[str, line(40)] | None = None
    id_number: Annotated[str, line(18)] | None = None


class SessionIn(_Body):
    mediator_id: Code | None = None  # the caller when a mediator schedules
    venue: Venue
    room_code: Code | None = None
    video_link: (
        Annotated[str, StringConstraints(max_length=300, pattern=r"^https://\S+$")] | None
    ) = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    participants: list[Code] = Field(default_factory=list, max_length=50)


class SessionRecord(_Body):
    attended: list[Code] = Field(default_factory=list, max_length=50)
    notes: Annotated[str, paragraphs(20000)] = ""
    outcome: Literal["continue", "agreement", "failed"]


class TermIn(_Body):
    obligor_party_id: Code
    action: Annotated[str, line(500, min_length=0)] = ""
    amount: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)] | None = None
    due_on: date


class AgreementIn(_Body):
    kind: AgreementKind
    agreed_on: date
    summary: Text
    party_ids: list[Code] = Field(max_length=50)
    signed_by: list[Code] = Field(default_factory=list, max_length=50)
    terms: list[TermIn] = Field(max_length=100)


class CourtBody(_Body):
    status: Literal["requested", "granted", "refused"]
    court: Annotated[str, line(200)] | None = None
    court_reference: Reference | None = None


class FollowUpIn(_Body):
    due_on: date


class TermCheck(_Body):
    term_id: Code
    status: Literal["fulfilled", "breached"]


class FollowUpRecord(_Body):
    note: Annotated[str, paragraphs(20000)] = ""
    terms: list[TermCheck] = Field(max_length=100)
    on_breach: Literal["reopened", "referred"] = "reopened"
    referral: Referral = "litigation"  # where a breach referred goes


class ClaimBody(_Body):
    rank: Annotated[str, line(64)] | None = None
    co_claimant: bool = False
    due_on: date | None = None


class NoteBody(_Body):
    note: Text


class ClearBody(_Body):
    outcome: Literal["cleared", "abandoned"] = "cleared"
    note: Text


# --------------------------------------------------------------------------------------------
# Answers


class CasePublic(BaseModel):
    case_id: str
    ticket_id: str | None
    category_code: str | None
    status: str
    opened_at: AwareDatetime
    origin: str = "dispatch"
    dispute_type: str = "other"
    level: str = "town"
    area_code: str | None = None
    centre_area_code: str | None = None
    due_at: AwareDatetime | None = None
    breaches: int = 0
    escalations: int = 0
    outcome: str | None = None
    ended_level: str | None = None


class PartyPublic(BaseModel):
    party_id: str
    role: str
    kind: str
    name: str
    phone: str | None
    id_number: str | None
    address: str | None
    masked: bool


class CaseDetail(CasePublic):
    summary: str = ""
    parties: list[PartyPublic] = Field(default_factory=list)
    mediators: list[dict[str, Any]] = Field(default_factory=list)
    sessions: list[dict[str, Any]] = Field(default_factory=list)
    agreements: list[dict[str, Any]] = Field(default_factory=list)
    follow_ups: list[dict[str, Any]] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)
    allowed_actions: list[str] = Field(default_factory=list)


class MediatorPublic(BaseModel):
    mediator_id: str
    name: str
    kind: str
    level: str
    specialities: list[str]
    centres: list[str]
    availability: list[dict[str, Any]]
    max_open_cases: int
    active: bool


class Suggestion(BaseModel):
    mediator_id: str
    name: str
    kind: str
    level: str
    speciality_match: bool
    level_match: bool
    open_cases: int
    score: int
    conflict: str | None = None


class SessionPublic(BaseModel):
    session_id: str
    case_id: str
    mediator_id: str
    venue: str
    room_code: str | None
    video_link: str | None
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    status: str
    participants: list[dict[str, Any]]
    notes: str
    outcome: str | None


class AgreementPublic(BaseModel):
    agreement_id: str
    case_id: str
    kind: str
    agreed_on: date
    summary: str
    party_ids: list[str]
    court_status: str
    court: str | None
    court_reference: str | None
    terms: list[dict[str, Any]] = Field(default_factory=list)
    signed_by: list[str] = Field(default_factory=list)
    follow_ups: list[dict[str, Any]] = Field(default_factory=list)


class FollowUpPublic(BaseModel):
    follow_up_id: str
    case_id: str
    agreement_id: str
    due_on: date
    status: str
    note: str


class BoardPostPublic(BaseModel):
    board_id: str
    case_id: str | None
    ticket_id: str | None
    origin: str
    reason: str
    area_code: str | None
    posted_at: AwareDatetime
    status: str
    lead_claimant: str | None
    due_on: date | None
    claims: list[dict[str, Any]] = Field(default_factory=list)
    notes: list[dict[str, Any]] = Field(default_factory=list)
    outcome_note: str = ""


class BoardStats(BaseModel):
    posted: int
    claimed: int
    cleared: int
    abandoned: int
    open: int
    claimants: int
    clearance_rate: float | None  # cleared / claimed; None before the first claim


class CaseStats(BaseModel):
    """Counts for the committee: no case, no party."""

    total: int
    by_status: dict[str, int]
    by_level: dict[str, int]
    by_dispute_type: dict[str, int]
    by_ended_level: dict[str, int]
    agreements: dict[str, int]
    success_rate: float | None  # agreed / (agreed + failed) among concluded cases
