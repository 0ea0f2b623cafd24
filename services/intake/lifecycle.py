"""A ticket's life after intake, as far as intake learns it from dispatch and mediation events.

Pure: ``step_for`` turns one event into a ``Step`` (what happened to which dispatch, a history
note); ``ticket_status`` folds a ticket's dispatches into one status; ``open311_status`` maps that
onto GeoReport v2's open / closed.

Statuses: ``received`` (nothing dispatched yet) → ``dispatched`` (assigned or offered for
grabbing, or between a return and the re-route) → ``in_progress`` (a department signed for it)
→ ``mediating`` (a mediation was asked for or a case opened) → ``completed`` (every dispatch
finished and at least one completed) or ``closed`` (withdrawn without handling).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from shared import pii
from shared.events import dispatch as d
from shared.events import mediation as m
from shared.events.base import Event

STATUSES = ("received", "dispatched", "in_progress", "mediating", "completed", "closed")
CLOSED_STATUSES = frozenset({"completed", "closed"})

# Dispatch states that still need someone to act.
OPEN_STATES = frozenset(
    {"offered", "assigned", "signed", "return_requested", "summoned", "mediation_requested"}
)
CASE_PREFIX = "case:"  # mediation cases are kept as pseudo-dispatches "case:<case id>"

_NOTE_MAX = 500


@dataclass(frozen=True, slots=True)
class Change:
    """A dispatch (or mediation case) whose state the event sets."""

    dispatch_id: str
    state: str | None = None  # None: unchanged
    department_code: str | None = None
    due_at: datetime | None = None
    resolved: bool | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """What one event means for its ticket."""

    ticket_id: str
    changes: tuple[Change, ...]
    note: str | None
    dispatch_id: str | None = None
    department_code: str | None = None
    # Dispatch's time-limit profile wins over the channel default intake proposed: the ticket
    # view must show the clocks the ticket is actually timed on.
    time_limit_profile: str | None = None


def _note(*parts: str | None) -> str | None:
    text = " — ".join(p.strip() for p in parts if p and p.strip())
    if not text:
        return None
    return _scrubbed(text)


@lru_cache(maxsize=4096)
def _scrubbed(text: str) -> str:
    """A note as stored: scrubbed, cut to ``_NOTE_MAX``. Remembered by its text: most notes
    repeat (``assigned to <department> — <handling line>`` for every assignment), and the
    scrubber's patterns ran over each one again (a third of a fetch's fold in the suite)."""
    return pii.scrub_text(text)[:_NOTE_MAX]


def step_for(event: Event) -> Step | None:
    """The step an event stands for; None for events that are not about one ticket."""
    match event:
        case d.TicketAssigned():
            due = event.deadlines.get("resolution")
            mode = "" if event.mode == "assign" else f" ({event.mode})"
            return Step(
                event.ticket_id,
                (Change(event.dispatch_id, "assigned", event.department_code, due),),
                _note(f"assigned to {event.department_code}{mode}", event.handling_line),
                event.dispatch_id,
                event.department_code,
                time_limit_profile=event.time_limit_profile,
            )
        case d.GrabOffered():
            return Step(
                event.ticket_id,
                (Change(event.dispatch_id, "offered"),),
                _note(f"offered for grabbing to {len(event.departments)} departments"),
                event.dispatch_id,
            )
        case d.DispatchSigned():
            verb = "grabbed" if event.via == "grab" else "signed for"
            return _simple(event, "signed", f"{verb} by {event.department_code}")
        case d.ReturnRequested():
            return _simple(event, "return_requested", "return requested", event.reason)
        case d.ReturnDecided():
            state = "returned" if event.approved else "signed"
            verdict = "return approved" if event.approved else "return denied"
            return _simple(event, state, verdict, event.note)
        case d.DispatchTransferred():
            return Step(
                event.ticket_id,
                (
                    Change(event.dispatch_id, "transferred"),
                    Change(event.new_dispatch_id, "assigned", event.to_department),
                ),
                _note(f"transferred to {event.to_department}", event.reason),
                event.dispatch_id,
                event.from_department,
            )
        case d.ExtensionDecided():
            due = event.new_due_at if event.approved and event.clock == "resolution" else None
            verdict = "approved" if event.approved else "denied"
            return Step(
                event.ticket_id,
                (Change(event.dispatch_id, None, due_at=due),),
                _note(f"extension of the {event.clock} clock {verdict}", event.note),
                event.dispatch_id,
                event.department_code,
            )
        case d.ExtensionRequested():
            return _simple(event, None, f"extension of the {event.clock} clock asked")
        case d.ProgressNoted():
            return _simple(event, None, "progress", event.note)
        case d.CitizenContacted():
            return _simple(event, None, f"citizen contacted ({event.method})", event.note)
        case d.DispatchCompleted():
            outcome = "completed" if event.resolved else "completed unresolved"
            return Step(
                event.ticket_id,
                (Change(event.dispatch_id, "completed", resolved=event.resolved),),
                _note(outcome, event.result),
                event.dispatch_id,
                event.department_code,
            )
        case d.DispatchWithdrawn():
            return _simple(event, "withdrawn", "withdrawn", event.reason)
        case d.DispatchSupervised():
            return _simple(event, None, "put under supervision (督办)", event.note)
        case d.DispatchFocused():
            return _simple(event, None, "marked for focused handling (重点办)", event.note)
        case d.DispatchEscalated():
            target = event.target_department_code or "city leadership"
            return _simple(event, None, f"{event.clock} clock missed: escalated to {target}")
        case d.WhistleBlown():
            return Step(
                event.ticket_id,
                tuple(Change(s.dispatch_id, "summoned", s.department_code) for s in event.summons),
                _note(f"whistle blown: {len(event.summons)} departments summoned", event.reason),
            )
        case d.DepartmentReported():
            timing = "on time" if event.on_time else "late"
            return _simple(event, None, f"{event.department_code} reported ({timing})")
        case d.MediationRequested():
            return _simple(event, "mediation_requested", "mediation requested", event.reason)
        case m.CaseOpened() if event.ticket_id:
            return Step(
                event.ticket_id,
                (Change(CASE_PREFIX + event.case_id, "mediating", "mediation"),),
                _note(f"mediation case {event.case_id} opened"),
            )
        case m.AgreementReached() if event.ticket_id:
            return Step(
                event.ticket_id,
                (Change(CASE_PREFIX + event.case_id, "agreed", "mediation", resolved=True),),
                _note(f"{event.kind} agreement reached", event.summary),
            )
    return None


def _simple(event: Event, state: str | None, *note: str | None) -> Step:
    dispatch_id: str = event.dispatch_id  # type: ignore[attr-defined]
    department: str | None = getattr(event, "department_code", None)
    return Step(
        event.ticket_id,  # type: ignore[attr-defined]
        (Change(dispatch_id, state, department),),
        _note(*note),
        dispatch_id,
        department,
    )


TRACKED: tuple[type[Event], ...] = (
    d.TicketAssigned,
    d.GrabOffered,
    d.DispatchSigned,
    d.ReturnRequested,
    d.ReturnDecided,
    d.DispatchTransferred,
    d.ExtensionRequested,
    d.ExtensionDecided,
    d.ProgressNoted,
    d.CitizenContacted,
    d.DispatchCompleted,
    d.DispatchWithdrawn,
    d.DispatchSupervised,
    d.DispatchFocused,
    d.DispatchEscalated,
    d.WhistleBlown,
    d.DepartmentReported,
    d.MediationRequested,
    m.CaseOpened,
    m.AgreementReached,
)
"""The event types intake follows, for the handler map."""


def ticket_status(dispatches: Iterable[tuple[str, str]]) -> str:
    """A ticket's status from its (dispatch id, state) pairs."""
    real: list[str] = []
    cases: list[str] = []
    for dispatch_id, state in dispatches:
        (cases if dispatch_id.startswith(CASE_PREFIX) else real).append(state)
    case_open = "mediating" in cases
    open_states = [s for s in real if s in OPEN_STATES]
    if open_states:
        if case_open or "mediation_requested" in open_states:
            return "mediating"
        if "signed" in open_states or "return_requested" in open_states:
            return "in_progress"
        return "dispatched"
    if real:
        if "completed" in real:
            return "completed"
        if "withdrawn" in real and all(s in ("withdrawn", "returned", "transferred") for s in real):
            return "closed"
        return "dispatched"  # returned or transferred: waiting for the re-route
    if case_open:
        return "mediating"
    if "agreed" in cases:
        return "completed"
    return "received"


def open311_status(status: str) -> str:
    """GeoReport v2 knows two statuses: closed once handling ended, open before."""
    return "closed" if status in CLOSED_STATUSES else "open"
