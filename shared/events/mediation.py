"""Events emitted by mediation: cases, mediators, sessions, agreements, follow-up, the board.

A case is keyed by its ticket when it has one (so a ticket's dispatch and mediation events keep
their order), else by its case id (walk-ins). Every event carries the case's ``level`` and
``area_code`` where they matter to evaluation (小事不出村 / 大事不出镇 are computed from the level
at which a case ends). Fields added after v1 shipped all have defaults, so older payloads still
decode.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal

from pydantic import AwareDatetime

from shared.events.base import Event, register

# The level of the centre that holds a case, from the village talk-it-out room up.
Level = Literal["village", "town", "district", "city"]
DisputeType = Literal[
    "family",
    "neighbour",
    "land",
    "contract_debt",
    "labour",
    "property_management",
    "traffic",
    "medical",
    "consumer",
    "other",
]
AgreementKind = Literal["written", "verbal"]
Referral = Literal["litigation", "arbitration", "legal_aid", "administrative", "none"]
Venue = Literal["room", "village_room", "video"]


class _MediationEvent(Event):
    topic: ClassVar[str] = "mediation.events"
    source: ClassVar[str] = "/fengqiao/mediation"

    case_id: str
    ticket_id: str | None = None

    def partition_key(self) -> str:
        return self.ticket_id or self.case_id


@register
class CaseOpened(_MediationEvent):
    """A mediation case was opened: from a dispatched ticket, or a walk-in at a centre."""

    event_type: ClassVar[str] = "mediation.case.opened"

    category_code: str | None = None
    dispute_type: DisputeType = "other"
    level: Level = "town"
    area_code: str | None = None
    origin: Literal["dispatch", "walk_in"] = "dispatch"


@register
class CaseAssigned(_MediationEvent):
    """A mediator took (or was given) the case; ``lead`` is the one who answers for it."""

    event_type: ClassVar[str] = "mediation.case.assigned"

    mediator_id: str
    lead: bool = True
    level: Level = "town"


@register
class SessionHeld(_MediationEvent):
    """A mediation session took place (in a room, a village room or by video link)."""

    event_type: ClassVar[str] = "mediation.session.held"

    session_id: str
    venue: Venue = "room"
    started_at: AwareDatetime
    ended_at: AwareDatetime
    outcome: Literal["continue", "agreement", "failed"] = "continue"


@register
class AgreementReached(_MediationEvent):
    """A mediation ended in an agreement (written or verbal); dispatch completes the ticket's
    open dispatches on it."""

    event_type: ClassVar[str] = "mediation.agreement.reached"

    agreement_id: str | None = None
    kind: AgreementKind = "written"
    summary: str = ""
    level: Level = "town"
    area_code: str | None = None
    terms: int = 0


@register
class MediationFailed(_MediationEvent):
    """Mediation ended without an agreement; dispatch returns the ticket to the line the
    referral names (litigation guidance, arbitration, the legal-aid line) or re-routes it."""

    event_type: ClassVar[str] = "mediation.case.failed"

    reason: str
    referral: Referral = "none"
    level: Level = "town"
    area_code: str | None = None


@register
class CourtConfirmation(_MediationEvent):
    """Judicial confirmation (司法确认) of an agreement was requested, granted or refused."""

    event_type: ClassVar[str] = "mediation.agreement.court_confirmation"

    agreement_id: str
    status: Literal["requested", "granted", "refused"]
    court: str | None = None
    court_reference: str | None = None


@register
class AgreementFulfilled(_MediationEvent):
    """Every term of an agreement was honoured (checked on follow-up visits)."""

    event_type: ClassVar[str] = "mediation.agreement.fulfilled"

    agreement_id: str


@register
class AgreementBreached(_MediationEvent):
    """A term of an agreement was not honoured; the case is reopened or referred."""

    event_type: ClassVar[str] = "mediation.agreement.breached"

    agreement_id: str
    term_id: str | None = None
    action: Literal["reopened", "referred"] = "reopened"
    breaches: int = 1


@register
class CaseEscalated(_MediationEvent):
    """A level handed the case up (village room → town centre → county / district → city),
    because mediation there failed or ran over its time limit."""

    event_type: ClassVar[str] = "mediation.case.escalated"

    from_level: Level
    to_level: Level
    reason: Literal["failed", "overdue", "requested"] = "failed"
    area_code: str | None = None


@register
class CaseReferred(_MediationEvent):
    """The case left mediation for another way of settling it."""

    event_type: ClassVar[str] = "mediation.case.referred"

    referral: Referral
    reason: str = ""
    level: Level = "town"


@register
class CaseClosed(_MediationEvent):
    """The case is closed; ``outcome`` says how, ``level`` where it ended."""

    event_type: ClassVar[str] = "mediation.case.closed"

    outcome: Literal["fulfilled", "agreed", "failed", "referred", "withdrawn"]
    level: Level = "town"
    area_code: str | None = None
    dispute_type: DisputeType = "other"
    category_code: str | None = None
    agreement_kind: AgreementKind | None = None


class _BoardEvent(Event):
    topic: ClassVar[str] = "mediation.events"
    source: ClassVar[str] = "/fengqiao/mediation"

    board_id: str
    case_id: str | None = None
    ticket_id: str | None = None

    def partition_key(self) -> str:
        return self.ticket_id or self.case_id or self.board_id


@register
class BoardPosted(_BoardEvent):
    """A hard case was put on the backlog board (揭榜挂帅) for an official to claim."""

    event_type: ClassVar[str] = "mediation.board.posted"

    reason: str
    origin: Literal["mediation", "dispatch"] = "mediation"
    area_code: str | None = None
    due_on: date | None = None


@register
class BoardClaimed(_BoardEvent):
    """An official claimed a posted case (or joined as a co-claimant)."""

    event_type: ClassVar[str] = "mediation.board.claimed"

    claimant_id: str
    claimant_rank: str | None = None
    co_claimant: bool = False


@register
class BoardCleared(_BoardEvent):
    """A claimed case was cleared (resolved), or given up."""

    event_type: ClassVar[str] = "mediation.board.cleared"

    outcome: Literal["cleared", "abandoned"] = "cleared"
