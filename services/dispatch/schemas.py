"""Dispatch's API shapes: request bodies and responses (tables are in ``models.py``)."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from services.dispatch.deadlines.profiles import ClockName, Unit
from services.dispatch.organisation.chart import DepartmentFlag
from services.dispatch.routing import TicketFacts
from shared import pii, taxonomy
from shared.geo import Tier

_DEPT_CODE = r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$"

# Every time the API answers with is aware and in UTC, whatever zone it was computed in.
Utc = Annotated[AwareDatetime, AfterValidator(lambda v: v.astimezone(UTC))]

# C0 control characters other than tab, line feed and carriage return, and DEL, as intake drops
# them: they mean nothing in a note, and PostgreSQL refuses NUL in text and JSON.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def without_control_characters(value: Any) -> Any:
    """A string with its control characters dropped (anything else is left to validation)."""
    if isinstance(value, str) and _CONTROL.search(value):
        return _CONTROL.sub("", value)
    return value


def clean_free_text(text: str) -> str:
    """What dispatch stores and publishes of text someone typed: control characters dropped,
    phone numbers, ID numbers and e-mail addresses masked (a department's note may quote the
    citizen's number; it must not reach the bus in clear)."""
    return pii.scrub_text(without_control_characters(text))


# A name: control characters dropped before the length limits are checked.
Name = Annotated[str, BeforeValidator(without_control_characters)]
# Free text departments and centres type: control characters dropped before the length limits
# are checked, personal data masked after. Every such field of a request body is one of these.
FreeText = Annotated[
    str, BeforeValidator(without_control_characters), AfterValidator(pii.scrub_text)
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --------------------------------------------------------------------------------------------
# Organisation


def _known_categories(v: list[str]) -> list[str]:
    for code in v:
        if not taxonomy.is_known(code):
            raise ValueError(f"unknown category code {code!r}")
    if len(set(v)) != len(v):
        raise ValueError("a category is listed twice")
    return v


class DepartmentCreate(_Body):
    """A new department (one unit): its tier, jurisdiction and responsibility list."""

    code: str = Field(pattern=_DEPT_CODE, max_length=64)
    name_zh: Name = Field(min_length=1, max_length=200)
    name_en: Name = Field(min_length=1, max_length=200)
    tier: Tier
    jurisdiction: str = Field(max_length=32, description="the area code whose subtree it covers")
    responsibilities: list[str] = Field(
        default_factory=list, description="taxonomy codes; a two-digit code means all its leaves"
    )
    flags: list[DepartmentFlag] = Field(default_factory=list)

    _categories = field_validator("responsibilities")(_known_categories)


class DepartmentUpdate(_Body):
    """Fields to change; the code, tier and jurisdiction of a unit do not change (create a new
    unit and deactivate the old one instead)."""

    name_zh: Name | None = Field(None, min_length=1, max_length=200)
    name_en: Name | None = Field(None, min_length=1, max_length=200)
    responsibilities: list[str] | None = None
    flags: list[DepartmentFlag] | None = None

    @field_validator("responsibilities")
    @classmethod
    def _categories(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _known_categories(v)


class DepartmentPublic(_Out):
    code: str
    name_zh: str
    name_en: str
    tier: str
    area_code: str = Field(description="the jurisdiction: an area code whose subtree it covers")
    responsibilities: list[str]
    flags: list[str]
    active: bool
    template: str | None = None
    revision: int = 0
    updated_at: Utc | None = None


class DepartmentPage(BaseModel):
    items: list[DepartmentPublic]
    total: int
    limit: int
    offset: int


class AreaPublic(_Out):
    code: str
    parent_code: str | None
    tier: str
    kind: str
    name_zh: str
    name_en: str
    grade: str | None = None


class OrganisationPublic(BaseModel):
    version: str
    revision: int
    areas_by_tier: dict[str, int]
    departments_by_tier: dict[str, int]
    inactive_departments: int


# --------------------------------------------------------------------------------------------
# Routing


class DryRunRequest(TicketFacts):
    """A ticket's facts, departments to exclude, and optionally candidate rules to try."""

    exclude: list[str] = Field(default_factory=list)
    rules_text: str | None = Field(
        None, description="a candidate rules file (YAML) to route with instead of the active one"
    )


class RulesPublic(BaseModel):
    rule_set_id: int
    version: str
    digest: str
    activated_at: Utc
    activated_by: str
    rules: list[dict[str, Any]]
    text: str | None = None


# --------------------------------------------------------------------------------------------
# Dispatches


class ClockPublic(_Out):
    clock: str
    started_at: Utc
    due_at: Utc
    original_due_at: Utc
    stopped_at: Utc | None
    escalation_level: int
    next_escalation_at: Utc | None
    state: Literal["running", "overdue", "stopped", "stopped_late"] = "running"


class DispatchPublic(_Out):
    dispatch_id: str
    ticket_id: str
    department_code: str | None
    category_code: str
    channel: str
    area_code: str | None
    title: str
    handling_line: str
    time_limit_profile: str
    mode: str
    status: str
    rule_id: str | None
    parent_dispatch_id: str | None
    whistle_id: str | None
    supervised: bool
    supervision_count: int
    focused: bool
    escalation_level: int
    extensions_granted: int
    result: str | None
    resolved: bool | None
    version: int
    assigned_at: Utc
    grab_until: Utc | None
    updated_at: Utc | None
    closed_at: Utc | None


class InboxItem(DispatchPublic):
    next_due_at: Utc | None = None
    overdue_clocks: list[str] = Field(default_factory=list)


class InboxPage(BaseModel):
    items: list[InboxItem]
    total: int
    limit: int
    offset: int


class ActionPublic(_Out):
    id: int
    action: str
    actor_role: str
    actor_subject: str
    actor_department: str | None
    from_status: str | None
    to_status: str | None
    note: str | None
    data: dict[str, Any]
    at: Utc


class ExtensionPublic(_Out):
    id: int
    clock: str
    amount: float
    unit: str
    reason: str
    status: str
    requested_by: str
    requested_at: Utc
    decided_by: str | None
    decided_at: Utc | None
    decision_note: str | None
    old_due_at: Utc | None
    new_due_at: Utc | None


class EscalationPublic(_Out):
    id: int
    dispatch_id: str
    ticket_id: str
    clock: str
    level: int
    department_code: str
    target_department_code: str | None
    due_at: Utc
    escalated_at: Utc


class DispatchDetail(DispatchPublic):
    clocks: list[ClockPublic]
    allowed_actions: list[str]
    offered_to: list[str]
    actions: list[ActionPublic]
    extensions: list[ExtensionPublic]
    escalations: list[EscalationPublic]


# ---- action bodies ----------------------------------------------------------------------------


class NoteBody(_Body):
    note: FreeText | None = Field(None, max_length=4000)


class RequiredNoteBody(_Body):
    note: FreeText = Field(min_length=1, max_length=4000)


class ReasonBody(_Body):
    reason: FreeText = Field(min_length=2, max_length=4000)


class TransferBody(_Body):
    to_department: str = Field(min_length=1, max_length=64)
    reason: FreeText = Field(min_length=2, max_length=4000)


class ExtensionBody(_Body):
    """How much more time, on which clock: exactly one amount."""

    clock: ClockName = ClockName.RESOLUTION
    working_days: int | None = Field(None, ge=1, le=60)
    working_hours: float | None = Field(None, gt=0, le=480)
    hours: float | None = Field(None, gt=0, le=24 * 60)
    minutes: float | None = Field(None, gt=0, le=24 * 60 * 7)
    reason: FreeText = Field(min_length=2, max_length=4000)

    @model_validator(mode="after")
    def _one_amount(self) -> ExtensionBody:
        given = [u for u in Unit if getattr(self, u.value) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of working_days, working_hours, hours, minutes")
        return self

    def amount(self) -> tuple[float, Unit]:
        """The requested amount and its unit."""
        unit = next(u for u in Unit if getattr(self, u.value) is not None)
        return float(getattr(self, unit.value)), unit


class ContactBody(_Body):
    method: Literal["phone", "visit", "sms", "online", "other"] = "phone"
    note: FreeText | None = Field(None, max_length=4000)


class CompleteBody(_Body):
    result: FreeText = Field(min_length=2, max_length=8000)
    resolved: bool = True


# --------------------------------------------------------------------------------------------
# Whistle


class SummonSpec(_Body):
    department_code: str = Field(min_length=1, max_length=64)
    report_within_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)


class WhistleBody(_Body):
    """Summon several departments to report (报到) on a ticket, each within its deadline."""

    reason: FreeText = Field(min_length=2, max_length=4000)
    summons: list[SummonSpec] = Field(min_length=1)
    source_dispatch_id: str | None = Field(
        None, max_length=64, description="the blowing department's own dispatch on the ticket"
    )


class BoardRow(BaseModel):
    department_code: str
    name_zh: str | None
    dispatch_id: str
    report_due_at: Utc
    reported_at: Utc | None
    state: Literal["reported", "reported_late", "waiting", "late"]
    late_by_seconds: int | None


class WhistleBoard(BaseModel):
    whistle_id: str
    ticket_id: str
    reason: str
    blown_by_role: str
    blown_by_department: str | None
    blown_at: Utc
    now: Utc
    summons: list[BoardRow]
    counts: dict[str, int]
