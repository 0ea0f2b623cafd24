"""Events emitted by dispatch: every state change of a dispatch."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from shared.events.base import Event, register

HandlingLine = Literal["normal", "task_force", "judicial", "mediation", "aid", "supervised_pool"]


class _DispatchEvent(Event):
    topic: ClassVar[str] = "dispatch.events"
    source: ClassVar[str] = "/fengqiao/dispatch"


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
