"""Events emitted by mediation: cases, sessions and agreements."""

from __future__ import annotations

from typing import ClassVar, Literal

from shared.events.base import Event, register


class _MediationEvent(Event):
    topic: ClassVar[str] = "mediation.events"
    source: ClassVar[str] = "/fengqiao/mediation"


@register
class CaseOpened(_MediationEvent):
    """A mediation case was opened for a ticket (or a walk-in)."""

    event_type: ClassVar[str] = "mediation.case.opened"

    case_id: str
    ticket_id: str | None = None
    category_code: str | None = None

    def partition_key(self) -> str:
        return self.ticket_id or self.case_id


@register
class AgreementReached(_MediationEvent):
    """A mediation ended in an agreement (written or verbal); dispatch completes the ticket's
    mediation dispatches on it. Declared minimal by dispatch (issue 4); mediation owns it."""

    event_type: ClassVar[str] = "mediation.agreement.reached"

    case_id: str
    ticket_id: str | None = None
    agreement_id: str | None = None
    kind: Literal["written", "verbal"] = "written"
    summary: str = ""

    def partition_key(self) -> str:
        return self.ticket_id or self.case_id
