"""Evaluation's projections, built from the event stream and rebuildable from it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel
from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from shared.db import AwareDateTime, service_base
from shared.outbox import bus_tables

# mypy cannot use a class built at run time as a base; to the type checker the base is
# plain SQLModel (which is what ``service_base`` returns a subclass of, with its own metadata).
if TYPE_CHECKING:
    EvaluationBase = SQLModel
else:
    EvaluationBase = service_base("evaluation")


class TicketFact(EvaluationBase, table=True):
    """One row per ticket, filled in by whichever of its events arrives (in any order): each
    field is folded so that the order of arrival does not change the result."""

    __tablename__ = "ticket_facts"

    ticket_id: str = Field(primary_key=True, max_length=32)
    channel: str | None = Field(default=None, max_length=64)
    category_code: str | None = Field(default=None, max_length=8)
    received_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime()))
    # the earliest assignment's time; department and line come from the latest assignment
    dispatched_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime()))
    assigned_at: datetime | None = Field(default=None, sa_column=Column(AwareDateTime()))
    department_code: str | None = Field(default=None, index=True, max_length=64)
    handling_line: str | None = Field(default=None, max_length=32)
    # the callback with the highest revision; older or repeated revisions change nothing
    feedback_id: str | None = Field(default=None, max_length=48)
    feedback_revision: int | None = None
    resolved: bool | None = None
    satisfaction: str | None = Field(default=None, max_length=32)


class Summary(BaseModel):
    """Headline counts for the committee, each a count of tickets."""

    received: int  # with their TicketReceived
    dispatched: int  # assigned at least once
    awaiting_dispatch: int  # received and not yet assigned
    feedback: int  # with at least one callback


metadata = EvaluationBase.metadata
outbox_table, inbox_table, bus_state_table = bus_tables(metadata)
