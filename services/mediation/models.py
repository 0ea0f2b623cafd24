"""Mediation's tables: dispute cases opened from dispatches or walk-ins."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import AwareDatetime, BaseModel
from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from shared.db import AwareDateTime, service_base
from shared.outbox import bus_tables

# mypy cannot use a class built at run time as a base; to the type checker the base is
# plain SQLModel (which is what ``service_base`` returns a subclass of, with its own metadata).
if TYPE_CHECKING:
    MediationBase = SQLModel
else:
    MediationBase = service_base("mediation")


class Case(MediationBase, table=True):
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
