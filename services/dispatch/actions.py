"""The department workflow's one-step actions as one declarative table: each row names the
route, the state-machine action, the body it takes, the body field noted in the audit trail,
and the event it emits with that event's own fields. ``perform`` runs any row
(``transitions.step`` then the event, in the caller's transaction); ``api/workflow.py`` makes
one route per row. Actions that do more than one step and one event (grab, returns, transfers,
extensions, the whistle, mediation) have their own modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.context import DispatchContext
from services.dispatch.models import Dispatch
from services.dispatch.schemas import (
    CompleteBody,
    ContactBody,
    NoteBody,
    ReasonBody,
    RequiredNoteBody,
)
from services.dispatch.transitions import Step, step
from services.dispatch.workflow import Action
from shared.auth import Principal
from shared.events.base import Event
from shared.events.dispatch import (
    CitizenContacted,
    DepartmentReported,
    DispatchCompleted,
    DispatchFocused,
    DispatchSigned,
    DispatchSupervised,
    DispatchWithdrawn,
    ProgressNoted,
    ReturnRequested,
)

B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True)
class SimpleAction(Generic[B]):
    """One workflow action that is a single step and a single event."""

    name: str  # the route's operation name
    path: str  # under /dispatches/{dispatch_id}/
    action: Action
    body: type[B]
    event: Callable[
        ..., Event
    ]  # built with the ticket, dispatch and department ids, and ``fields``
    fields: Callable[[Step, B], dict[str, Any]]  # the event's own fields
    doc: str  # the route's description
    note: str = "note"  # the body field written to the audit trail's note
    optional: bool = False  # the route may be called without a body (its defaults apply)


async def perform(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    spec: SimpleAction[B],
    dispatch_id: str,
    principal: Principal,
    body: B | None = None,
) -> Dispatch:
    """Apply one table action to a dispatch and emit its event."""
    given = body if body is not None else spec.body()
    data = {k: v for k, v in given.model_dump().items() if k in _AUDITED}
    s = await step(
        session,
        ctx,
        dispatch_id=dispatch_id,
        action=spec.action,
        principal=principal,
        note=getattr(given, spec.note),
        data=data or None,
    )
    if isinstance(given, CompleteBody):
        s.d.result, s.d.resolved = given.result, given.resolved
    event = spec.event(
        ticket_id=s.d.ticket_id,
        dispatch_id=s.d.dispatch_id,
        department_code=s.d.department_code,
        **spec.fields(s, given),
    )
    await ctx.outbox.add(session, event)
    return s.d


# Body fields kept in the audit row's data besides the note (how the citizen was contacted,
# whether a completion resolved the matter).
_AUDITED = frozenset({"method", "resolved"})


def _late(s: Step, body: BaseModel) -> dict[str, Any]:
    return {"late": s.late}


def _reason(s: Step, body: ReasonBody) -> dict[str, Any]:
    return {"reason": body.reason}


def _noted(s: Step, body: NoteBody | RequiredNoteBody) -> dict[str, Any]:
    return {"note": body.note}


def _progress(s: Step, body: RequiredNoteBody) -> dict[str, Any]:
    return {"note": body.note, "late": s.late}


def _contact(s: Step, body: ContactBody) -> dict[str, Any]:
    return {"method": body.method, "note": body.note, "late": s.late}


def _complete(s: Step, body: CompleteBody) -> dict[str, Any]:
    return {"result": body.result, "resolved": body.resolved, "late": s.late}


def _supervised(s: Step, body: RequiredNoteBody) -> dict[str, Any]:
    return {"note": body.note, "count": s.after.supervision_count}


def _reported(s: Step, body: NoteBody) -> dict[str, Any]:
    clock = s.stopped["report"]
    return {
        "whistle_id": s.d.whistle_id,
        "report_due_at": clock.due_at,
        "reported_at": s.now,
        "on_time": not s.late,
    }


SIMPLE_ACTIONS: tuple[SimpleAction[Any], ...] = (
    SimpleAction(
        "sign_for", "sign-for", Action.SIGN_FOR, NoteBody, DispatchSigned, _late, optional=True,
        doc="签收: the department acknowledges its dispatch (stops the sign-for clock).",
    ),
    SimpleAction(
        "request_return", "return", Action.RETURN_REQUEST, ReasonBody, ReturnRequested, _reason,
        note="reason", doc="退单: ask the centre to take the dispatch back, with the reason.",
    ),
    SimpleAction(
        "note_progress", "progress", Action.PROGRESS, RequiredNoteBody, ProgressNoted, _progress,
        doc="A progress note (stops the feedback clock).",
    ),
    SimpleAction(
        "contact", "contact", Action.CONTACT, ContactBody, CitizenContacted, _contact,
        optional=True,
        doc="The citizen (or enterprise) has been contacted (stops the first-contact clock).",
    ),
    SimpleAction(
        "complete", "complete", Action.COMPLETE, CompleteBody, DispatchCompleted, _complete,
        note="result", doc="办结: complete the dispatch with its result.",
    ),
    SimpleAction(
        "supervise", "supervise", Action.SUPERVISE, RequiredNoteBody, DispatchSupervised,
        _supervised, doc="Centre: 督办 — press the department, on the record.",
    ),
    SimpleAction(
        "focus", "focus", Action.FOCUS, NoteBody, DispatchFocused, _noted, optional=True,
        doc="Centre: 重点办 — mark for focused leadership handling.",
    ),
    SimpleAction(
        "withdraw", "withdraw", Action.WITHDRAW, ReasonBody, DispatchWithdrawn, _reason,
        note="reason", doc="Centre: close without handling (a duplicate, or the citizen withdrew).",
    ),
    SimpleAction(
        "report", "report", Action.REPORT, NoteBody, DepartmentReported, _reported, optional=True,
        doc="报到: a summoned department reports to the whistle; on time or late, it is recorded.",
    ),
)  # fmt: skip
