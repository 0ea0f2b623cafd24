"""Intake's tables: tickets as received (clear-text PII stays here only), id blocks, bus tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field as SQLField

from shared.db import AwareDateTime, service_base
from shared.events.intake import Urgency
from shared.outbox import bus_tables

IntakeBase = service_base("intake")


class Ticket(IntakeBase, table=True):  # type: ignore[call-arg]
    """One accepted appeal. Clear-text contact and ID numbers never leave this table."""

    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("channel", "external_id", name="uq_ticket_channel_external"),
    )

    ticket_id: str = SQLField(primary_key=True, max_length=32)
    channel: str = SQLField(index=True, max_length=64)
    external_id: str | None = SQLField(default=None, max_length=128)
    received_at: datetime = SQLField(sa_column=Column(AwareDateTime(), nullable=False, index=True))
    title: str
    content: str
    citizen_name: str | None = None
    citizen_phone: str | None = SQLField(default=None, max_length=32)
    citizen_id_number: str | None = SQLField(default=None, max_length=32)
    citizen_hash: str | None = SQLField(default=None, index=True, max_length=64)
    address: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    grid_code: str | None = SQLField(default=None, index=True, max_length=32)
    category_code: str = SQLField(index=True, max_length=8)
    urgency: str = SQLField(default="normal", max_length=16)
    is_enterprise: bool = False
    repeat_of: str | None = SQLField(default=None, max_length=32)
    repeat_count: int = 0
    time_limit_profile: str = SQLField(default="standard", max_length=32)
    status: str = SQLField(default="received", max_length=32)
    extra: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))


class IdBlock(IntakeBase, table=True):  # type: ignore[call-arg]
    """The next free ticket sequence number per day; processes reserve blocks of numbers."""

    __tablename__ = "id_blocks"

    day: str = SQLField(primary_key=True, max_length=8)
    next_value: int


class TicketIn(BaseModel):
    """A ticket as the 12345 hotline platform posts it (the canonical JSON channel)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channel: str = Field("hotline-12345-phone", max_length=64)
    external_id: str | None = Field(None, max_length=128, description="The channel's own id")
    title: str = Field(..., min_length=1, max_length=200)
    content: str = Field(..., min_length=1, max_length=20000)
    citizen_name: str | None = Field(None, max_length=64)
    citizen_phone: str | None = Field(None, max_length=32)
    address: str | None = Field(None, max_length=500)
    longitude: float | None = Field(None, ge=-180, le=180)
    latitude: float | None = Field(None, ge=-90, le=90)
    category_code: str | None = Field(None, pattern=r"^\d{2}(\d{2})?$")
    urgency: Urgency = "normal"
    is_enterprise: bool = False
    received_at: AwareDatetime | None = None


class TicketAccepted(BaseModel):
    """What the channel gets back: the ticket id, and whether this post created it."""

    ticket_id: str
    status: str
    created: bool


class TicketPublic(BaseModel):
    """A ticket as the hotline sees it: masked contact, no clear-text numbers."""

    ticket_id: str
    channel: str
    external_id: str | None
    received_at: AwareDatetime
    title: str
    content: str
    category_code: str
    urgency: str
    is_enterprise: bool
    status: str


metadata = IntakeBase.metadata
outbox_table, inbox_table, bus_state_table = bus_tables(metadata)
