"""Events emitted by dispatch: every state change of a dispatch, and of the organisation.

A *dispatch* is one department's share of a ticket. Every event about one carries the ticket id
(the record key, so one ticket's events keep their order) and the dispatch id. Fields added after
v1 shipped all have defaults, so older payloads still decode.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.base import Event, register

HandlingLine = Literal[
    "normal", "task_force", "judicial", "mediation", "aid", "supervised_pool", "proactive"
]
# How a dispatch came to its department: routed and assigned, grabbed from the pool, assigned
# by the scheduler when nobody grabbed it (督着办), re-routed after an approved return, or
# transferred by the department that had it.
AssignMode = Literal["assign", "grab", "supervised", "reroute", "transfer"]
ClockName = Literal["sign_for", "first_contact", "feedback", "resolution", "report"]


class _DispatchEvent(Event):
    topic: ClassVar[str] = "dispatch.events"
    source: ClassVar[str] = "/fengqiao/dispatch"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@register
class TicketAssigned(_DispatchEvent):
    """A ticket was routed and assigned to a department (or the supervised pool)."""

    event_type: ClassVar[str] = "dispatch.ticket.assigned"

    ticket_id: str
    dispatch_id: str
    department_code: str
    department_tier: str
    area_code: str | None = None
    category_code: str
    channel: str
    handling_line: HandlingLine = "normal"
    time_limit_profile: str = "standard"
    rule_id: str | None = None
    deadlines: dict[str, AwareDatetime] = Field(default_factory=dict)
    mode: AssignMode = "assign"
    supervised: bool = False
    focused: bool = False
    rules_version: str | None = None
    parent_dispatch_id: str | None = None


@register
class GrabOffered(_DispatchEvent):
    """A ticket was put in the grab pool (抢单池) for the eligible departments to grab."""

    event_type: ClassVar[str] = "dispatch.grab.offered"

    ticket_id: str
    dispatch_id: str
    departments: tuple[str, ...]
    grab_until: AwareDatetime
    category_code: str
    area_code: str | None = None
    handling_line: HandlingLine = "normal"
    rule_id: str | None = None


@register
class DispatchSigned(_DispatchEvent):
    """The department signed for (签收) its dispatch, or grabbed it from the pool."""

    event_type: ClassVar[str] = "dispatch.dispatch.signed"

    ticket_id: str
    dispatch_id: str
    department_code: str
    via: Literal["sign_for", "grab"] = "sign_for"
    late: bool = False


@register
class ReturnRequested(_DispatchEvent):
    """The department asked to return (退单) a dispatch that is not its business."""

    event_type: ClassVar[str] = "dispatch.return.requested"

    ticket_id: str
    dispatch_id: str
    department_code: str
    reason: str


@register
class ReturnDecided(_DispatchEvent):
    """The centre approved (the ticket is re-routed without the department) or denied a return."""

    event_type: ClassVar[str] = "dispatch.return.decided"

    ticket_id: str
    dispatch_id: str
    department_code: str
    approved: bool
    note: str | None = None
    rerouted_to: tuple[str, ...] = ()


@register
class DispatchTransferred(_DispatchEvent):
    """The department handed its dispatch to another department; a new dispatch takes over."""

    event_type: ClassVar[str] = "dispatch.dispatch.transferred"

    ticket_id: str
    dispatch_id: str
    from_department: str
    to_department: str
    new_dispatch_id: str
    reason: str


@register
class ExtensionRequested(_DispatchEvent):
    """The department asked the centre to extend one of its clocks."""

    event_type: ClassVar[str] = "dispatch.extension.requested"

    ticket_id: str
    dispatch_id: str
    department_code: str
    request_id: int
    clock: ClockName
    amount: float
    unit: Literal["minutes", "hours", "working_hours", "working_days"]
    reason: str


@register
class ExtensionDecided(_DispatchEvent):
    """The centre approved (the clock moved) or denied an extension request."""

    event_type: ClassVar[str] = "dispatch.extension.decided"

    ticket_id: str
    dispatch_id: str
    department_code: str
    request_id: int
    clock: ClockName
    approved: bool
    old_due_at: AwareDatetime
    new_due_at: AwareDatetime | None = None
    note: str | None = None


@register
class ProgressNoted(_DispatchEvent):
    """The department recorded progress on its dispatch."""

    event_type: ClassVar[str] = "dispatch.progress.noted"

    ticket_id: str
    dispatch_id: str
    department_code: str
    note: str
    late: bool = False


@register
class CitizenContacted(_DispatchEvent):
    """The department contacted the citizen (or enterprise) about the appeal."""

    event_type: ClassVar[str] = "dispatch.citizen.contacted"

    ticket_id: str
    dispatch_id: str
    department_code: str
    method: Literal["phone", "visit", "sms", "online", "other"] = "phone"
    note: str | None = None
    late: bool = False


@register
class DispatchCompleted(_DispatchEvent):
    """The dispatch was completed (办结) with a result, by the department or by a mediated
    agreement."""

    event_type: ClassVar[str] = "dispatch.dispatch.completed"

    ticket_id: str
    dispatch_id: str
    department_code: str
    result: str
    resolved: bool = True
    via: Literal["department", "mediation"] = "department"
    late: bool = False


@register
class DispatchWithdrawn(_DispatchEvent):
    """The centre closed a dispatch without handling: a duplicate, or the citizen withdrew."""

    event_type: ClassVar[str] = "dispatch.dispatch.withdrawn"

    ticket_id: str
    dispatch_id: str
    department_code: str | None = None
    reason: str


@register
class DispatchSupervised(_DispatchEvent):
    """The centre put a dispatch under supervision (督办)."""

    event_type: ClassVar[str] = "dispatch.dispatch.supervised"

    ticket_id: str
    dispatch_id: str
    department_code: str | None = None
    note: str
    count: int = 1


@register
class DispatchFocused(_DispatchEvent):
    """The centre marked a dispatch for focused leadership handling (重点办)."""

    event_type: ClassVar[str] = "dispatch.dispatch.focused"

    ticket_id: str
    dispatch_id: str
    department_code: str | None = None
    note: str | None = None


@register
class DispatchEscalated(_DispatchEvent):
    """A clock was missed: the dispatch escalated one tier up (village → town → district → city).

    ``target_department_code`` None means there is no centre above: the city leadership.
    """

    event_type: ClassVar[str] = "dispatch.dispatch.escalated"

    ticket_id: str
    dispatch_id: str
    department_code: str
    clock: ClockName
    level: int
    target_department_code: str | None = None
    due_at: AwareDatetime


class Summons(_Part):
    """One department a whistle summoned, and its report deadline."""

    department_code: str
    dispatch_id: str
    report_due_at: AwareDatetime


@register
class WhistleBlown(_DispatchEvent):
    """A grid worker, a centre or a handling department blew the whistle (吹哨) on a ticket."""

    event_type: ClassVar[str] = "dispatch.whistle.blown"

    ticket_id: str
    whistle_id: str
    blown_by_role: str
    blown_by_department: str | None = None
    reason: str
    summons: tuple[Summons, ...] = ()


@register
class DepartmentReported(_DispatchEvent):
    """A summoned department reported (报到) to a whistle, on time or late."""

    event_type: ClassVar[str] = "dispatch.whistle.reported"

    ticket_id: str
    whistle_id: str
    dispatch_id: str
    department_code: str
    report_due_at: AwareDatetime
    reported_at: AwareDatetime
    on_time: bool


@register
class MediationRequested(_DispatchEvent):
    """A ticket needs mediation: routed down the mediation line, or asked for by its handler."""

    event_type: ClassVar[str] = "dispatch.mediation.requested"

    ticket_id: str
    dispatch_id: str
    department_code: str
    category_code: str
    area_code: str | None = None
    requested_by: Literal["routing", "department"] = "routing"
    reason: str | None = None


@register
class DepartmentChanged(_DispatchEvent):
    """A department was created, updated, deactivated or reactivated through the admin API."""

    event_type: ClassVar[str] = "dispatch.department.changed"

    code: str
    change: Literal["created", "updated", "deactivated", "reactivated"]
    name_zh: str
    name_en: str
    tier: str
    jurisdiction: str
    responsibilities: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    active: bool = True
    org_revision: int

    def partition_key(self) -> str:
        return self.code


@register
class OrganisationLoaded(_DispatchEvent):
    """The demo city and its org chart were loaded into an empty dispatch database."""

    event_type: ClassVar[str] = "dispatch.organisation.loaded"

    version: str
    areas: int
    departments: int
    org_revision: int = 0

    def partition_key(self) -> str:
        return "organisation"


@register
class RoutingRulesActivated(_DispatchEvent):
    """A new routing rules file became the active version."""

    event_type: ClassVar[str] = "dispatch.rules.activated"

    rule_set_id: int
    version: str
    digest: str
    activated_by: str

    def partition_key(self) -> str:
        return "routing-rules"
