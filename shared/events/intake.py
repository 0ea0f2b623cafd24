"""Events emitted by intake: one canonical ticket event for all 72 channels, and callbacks."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.base import Event, register

Urgency = Literal["normal", "urgent", "critical"]
CategorySource = Literal["channel", "classifier"]
Satisfaction = Literal["satisfied", "basically_satisfied", "dissatisfied"]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Citizen(_Part):
    """Who appealed, as far as it may leave intake: masked display values and a salted hash."""

    display_name: str | None = None
    phone_masked: str | None = None
    citizen_hash: str | None = Field(None, description="HMAC-SHA256 of the normalized phone/ID")


class Location(_Part):
    address: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    grid_code: str | None = None
    area_code: str | None = None


class Attachment(_Part):
    filename: str
    content_type: str
    size: int
    sha256: str


class _IntakeEvent(Event):
    topic: ClassVar[str] = "intake.tickets"
    source: ClassVar[str] = "/fengqiao/intake"


@register
class TicketReceived(_IntakeEvent):
    """A ticket was accepted from a channel and normalized."""

    event_type: ClassVar[str] = "intake.ticket.received"

    ticket_id: str
    channel: str
    received_at: AwareDatetime
    title: str
    content: str
    citizen: Citizen = Citizen()
    location: Location = Location()
    category_code: str
    urgency: Urgency = "normal"
    is_enterprise: bool = False
    repeat_of: str | None = None
    repeat_count: int = 0
    external_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    time_limit_profile: str = "standard"
    # Added after v1 shipped (defaults keep older payloads decodable): whether the category
    # came from the channel or from intake's classifier.
    category_source: CategorySource | None = None


@register
class FeedbackReceived(_IntakeEvent):
    """A callback (回访) recorded whether the citizen's matter was resolved and how satisfied."""

    event_type: ClassVar[str] = "intake.feedback.received"

    ticket_id: str
    feedback_id: str
    resolved: bool
    satisfaction: Satisfaction
    comment: str | None = None
    revision: int = 1
    # Added after v1 shipped: where the callback came from, when the citizen was reached, and
    # the earlier callback of the same ticket this revision replaces in effect.
    channel: str | None = None
    received_at: AwareDatetime | None = None
    replaces: str | None = None
