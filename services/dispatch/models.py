"""Dispatch's tables: the organisation, and one dispatch per ticket assignment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel
from sqlalchemy import JSON, Column
from sqlmodel import Field

from shared.db import AwareDateTime, service_base
from shared.outbox import bus_tables

DispatchBase = service_base("dispatch")


class Department(DispatchBase, table=True):  # type: ignore[call-arg]
    """A unit handling appeals in its jurisdiction, for the categories it is responsible for."""

    __tablename__ = "departments"

    code: str = Field(primary_key=True, max_length=64)
    name_zh: str
    name_en: str
    tier: str = Field(max_length=16)  # city | district | town | village | grid
    area_code: str = Field(max_length=32)
    responsibilities: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    active: bool = True


class Dispatch(DispatchBase, table=True):  # type: ignore[call-arg]
    """A ticket handed to one department, with its clocks and state."""

    __tablename__ = "dispatches"

    dispatch_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(index=True, max_length=32)
    department_code: str = Field(index=True, max_length=64)
    category_code: str = Field(max_length=8)
    channel: str = Field(max_length=64)
    handling_line: str = Field(default="normal", max_length=32)
    time_limit_profile: str = Field(default="standard", max_length=32)
    status: str = Field(default="assigned", max_length=32)
    rule_id: str | None = None
    assigned_at: datetime = Field(sa_column=Column(AwareDateTime(), nullable=False))
    deadlines: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DispatchPublic(BaseModel):
    dispatch_id: str
    ticket_id: str
    department_code: str
    category_code: str
    handling_line: str
    status: str
    assigned_at: AwareDatetime


class DepartmentPublic(BaseModel):
    code: str
    name_zh: str
    name_en: str
    tier: str
    area_code: str
    responsibilities: list[str]


metadata = DispatchBase.metadata
outbox_table, inbox_table, bus_state_table = bus_tables(metadata)
