"""Mediation's tables: dispute cases opened from dispatches or walk-ins."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel
from sqlalchemy import Column
from sqlmodel import Field

from shared.db import AwareDateTime, service_base
from shared.outbox import bus_tables

MediationBase = service_base("mediation")


class Case(MediationBase, table=True):  # type: ignore[call-arg]
    """A dispute case."""

    __tablename__ = "cases"

    case_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str | None = Field(default=None, index=True, unique=True, max_length=32)
    category_code: str | None = Field(default=None, max_length=8)
    status: str = Field(default="open", max_length=32)
    opened_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))


class CasePublic(BaseModel):
    case_id: str
    ticket_id: str | None
    category_code: str | None
    status: str
    opened_at: AwareDatetime


metadata = MediationBase.metadata
outbox_table, inbox_table, bus_state_table = bus_tables(metadata)
