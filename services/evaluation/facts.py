"""Folding a ticket's (or a mediation case's) events into facts: pure, and indifferent to the
order and repetition of its events.

Each fold takes every event evaluation holds for one ticket (or case) and returns the facts from
scratch. Events are sorted by when they happened (ties by type and id) before folding, and every
count is of distinct natural keys (a dispatch id, an extension request id, an escalation's clock
and level), so an event arriving late, twice, or replayed under a new event id changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any
from uuid import UUID

from services.evaluation.models import CaseFact, DispatchFact, TicketFact
from shared.bulk import Draft
from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event
from shared.geo import Tier, tier_of
from shared.workcalendar import WorkCalendar, working_days_between

PROACTIVE_PREFIX = "P-"
PROACTIVE_LINE = "proactive"
# Dispatch states after which a dispatch no longer holds its ticket open.
_ENDED = frozenset({"completed", "withdrawn", "returned", "transferred"})
_VILLAGE_TIERS = frozenset({"village", "grid"})
_TOWN_TIERS = frozenset({"town", "village", "grid"})


@dataclass
class TicketFold:
    """A ticket's facts: the ticket and each of its dispatches (in dispatch id order), as
    drafts; the mapped models are built on first use."""

    draft: Draft
    dispatch_drafts: list[Draft] = field(default_factory=list)

    @cached_property
    def ticket(self) -> TicketFact:
        return TicketFact(**self.draft.__dict__)

    @cached_property
    def dispatches(self) -> list[DispatchFact]:
        return [DispatchFact(**r.__dict__) for r in self.dispatch_drafts]


def _order(event: Event) -> tuple[datetime, str, UUID]:
    # A UUID compares as its text does (fixed-width lower-case hex): the same order as the id's
    # string, without making one for every event of every refold.
    return (event.occurred_at, event.event_type, event.event_id)


_LEVELS = ("district_code", "town_code", "village_code", "grid_code")


def area_levels(code: str | None) -> dict[str, str | None]:
    """The district, town, village and grid codes a (valid) area code lies in; codes nest by
    prefix, so a grid's ancestors are its code's prefixes."""
    return dict(zip(_LEVELS, _levels(code), strict=True))


@lru_cache(maxsize=1 << 14)  # a few hundred bytes an entry: a few MB
def _levels(code: str | None) -> tuple[str | None, ...]:
    """``area_levels``' values, remembered by code: every refold of a ticket asks again."""
    if not code:
        return (None,) * 4
    try:
        tier = tier_of(code)
    except ValueError:
        return (None,) * 4
    if tier is Tier.CITY:
        return (None,) * 4
    return (
        code[:6],
        code[:9] if tier.level >= Tier.TOWN.level else None,
        code[:12] if tier.level >= Tier.VILLAGE.level else None,
        code if tier is Tier.GRID else None,
    )


@dataclass
class TicketState:
    """A ticket's fold after some of its events (``fold_more``), before the facts are finished
    from it (``finish``): the drafts as the events left them, the natural keys counted, and
    the order key of the last event folded. Folding more events onto a state that come after
    its last one is folding them all from scratch, in one go."""

    ticket_id: str
    fact: Draft
    dispatches: dict[str, Draft] = field(default_factory=dict)
    extensions: set[tuple[str, int]] = field(default_factory=set)
    escalations: set[tuple[str, str, int]] = field(default_factory=set)
    whistles: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    transfers: set[str] = field(default_factory=set)
    callbacks: dict[int, i.FeedbackReceived] = field(default_factory=dict)
    assigned_area: str | None = None
    first_completion: datetime | None = None
    last: tuple[datetime, str, UUID] | None = None
    # The handling time the last finish worked out and what it depends on (the calendar, the
    # start and the completion): every event after completion finishes the state again, and
    # the working days of an unchanged span are the same. Not part of the fold: a cache.
    handling: tuple[WorkCalendar, datetime, datetime, int] | None = None

    @classmethod
    def start(cls, ticket_id: str) -> TicketState:
        """A ticket's state before any of its events."""
        return cls(ticket_id=ticket_id, fact=Draft(TicketFact, ticket_id=ticket_id))


def _copy_draft(draft: Draft) -> Draft:
    copied = object.__new__(Draft)
    object.__setattr__(copied, "_model", draft._model)
    copied.__dict__.update(draft.__dict__)
    return copied


def fold_ticket(ticket_id: str, events: Iterable[Event], *, calendar: WorkCalendar) -> TicketFold:
    """The ticket's facts from all its intake and dispatch events, in any order."""
    return _finish(fold_state(ticket_id, events), calendar=calendar, keep=False)


def fold_state(ticket_id: str, events: Iterable[Event]) -> TicketState:
    """The ticket's state after all of ``events`` (in any order) and no others."""
    state = TicketState.start(ticket_id)
    _fold_into(state, sorted(events, key=_order))
    return state


def fold_more(state: TicketState, events: Iterable[Event]) -> bool:
    """Fold ``events`` onto ``state``, in place, if every one of them sorts after the last
    event folded (the result is then the fold of all of them from scratch) and say so; else
    leave ``state`` as it was and say False: the ticket must be folded from all its events."""
    ordered = sorted(events, key=_order)
    if ordered and state.last is not None and _order(ordered[0]) <= state.last:
        return False
    _fold_into(state, ordered)
    return True


def finish(state: TicketState, *, calendar: WorkCalendar) -> TicketFold:
    """The ticket's facts from a state, whose fold is left as it was (only the handling time it
    keeps may change): more may be folded onto it. The facts' dispatch drafts that finishing
    does not change are the state's own: read them before folding more."""
    return _finish(state, calendar=calendar, keep=True)


def _fold_into(state: TicketState, ordered: Sequence[Event]) -> None:
    """Fold events (in ``_order``, all after ``state.last``) into ``state``, in place."""
    if not ordered:
        return
    ticket_id, fact, dispatches = state.ticket_id, state.fact, state.dispatches
    extensions, escalations, whistles = state.extensions, state.escalations, state.whistles
    returns, transfers, callbacks = state.returns, state.transfers, state.callbacks
    assigned_area, first_completion = state.assigned_area, state.first_completion

    def dispatch(dispatch_id: str) -> Draft:
        if dispatch_id not in dispatches:
            dispatches[dispatch_id] = Draft(
                DispatchFact, dispatch_id=dispatch_id, ticket_id=ticket_id
            )
        return dispatches[dispatch_id]

    for event in ordered:
        match event:
            case i.TicketReceived():
                fact.channel = event.channel
                fact.category_code = event.category_code
                fact.area_code = event.location.grid_code or event.location.area_code
                fact.is_enterprise = event.is_enterprise
                fact.urgency = event.urgency
                fact.is_repeat = event.repeat_of is not None or event.repeat_count > 0
                fact.received_at = event.received_at
                if fact.time_limit_profile is None:
                    fact.time_limit_profile = event.time_limit_profile
            case i.FeedbackReceived():
                callbacks.setdefault(event.revision, event)
            case d.TicketAssigned():
                row = dispatch(event.dispatch_id)
                row.department_code = event.department_code
                row.department_tier = event.department_tier
                row.handling_line = event.handling_line
                row.mode = event.mode
                row.assigned_at = row.assigned_at or event.occurred_at
                if row.state not in _ENDED:
                    row.state = "assigned"
                fact.channel = fact.channel or event.channel
                fact.category_code = fact.category_code or event.category_code
                assigned_area = assigned_area or event.area_code
                # Dispatch's profile is the one the ticket is timed on (intake only proposes).
                fact.time_limit_profile = event.time_limit_profile
                fact.supervised = fact.supervised or event.supervised
                fact.focused = fact.focused or event.focused
                if fact.dispatched_at is None:
                    fact.dispatched_at = event.occurred_at
                if fact.assigned_at is None or event.occurred_at >= fact.assigned_at:
                    fact.assigned_at = event.occurred_at
                    fact.department_code = event.department_code
                    fact.department_tier = event.department_tier
                    fact.handling_line = event.handling_line
                    fact.mode = event.mode
                if first_completion is not None and event.occurred_at > first_completion:
                    fact.reopened = True
            case d.DispatchSigned():
                row = dispatch(event.dispatch_id)
                if row.signed_at is None:
                    row.signed_at, row.sign_late = event.occurred_at, event.late
                if row.state == "assigned":
                    row.state = "signed"
            case d.CitizenContacted():
                row = dispatch(event.dispatch_id)
                if row.contacted_at is None:
                    row.contacted_at, row.contact_late = event.occurred_at, event.late
            case d.DispatchCompleted():
                row = dispatch(event.dispatch_id)
                row.department_code = row.department_code or event.department_code
                if row.completed_at is None:
                    row.completed_at, row.complete_late = event.occurred_at, event.late
                    row.completed_via, row.resolved = event.via, event.resolved
                row.state = "completed"
                if first_completion is None:
                    first_completion = event.occurred_at
            case d.DispatchWithdrawn():
                if dispatch(event.dispatch_id).state != "completed":
                    dispatch(event.dispatch_id).state = "withdrawn"
            case d.ReturnDecided() if event.approved:
                returns.add(event.dispatch_id)
                if dispatch(event.dispatch_id).state != "completed":
                    dispatch(event.dispatch_id).state = "returned"
            case d.DispatchTransferred():
                transfers.add(event.new_dispatch_id)
                if dispatch(event.dispatch_id).state != "completed":
                    dispatch(event.dispatch_id).state = "transferred"
                new = dispatch(event.new_dispatch_id)
                new.department_code = new.department_code or event.to_department
                new.mode = new.mode or "transfer"
                new.assigned_at = new.assigned_at or event.occurred_at
            case d.ExtensionDecided() if event.approved:
                extensions.add((event.dispatch_id, event.request_id))
            case d.DispatchEscalated():
                escalations.add((event.dispatch_id, event.clock, event.level))
                row = dispatch(event.dispatch_id)
                row.department_code = row.department_code or event.department_code
                row.sign_escalated |= event.clock == "sign_for"
                row.contact_escalated |= event.clock == "first_contact"
            case d.DispatchSupervised():
                fact.supervised = True
            case d.DispatchFocused():
                fact.focused = True
            case d.WhistleBlown():
                whistles.add(event.whistle_id)
                for summons in event.summons:
                    row = dispatch(summons.dispatch_id)
                    row.department_code = row.department_code or summons.department_code
                    row.summoned = True
                    row.assigned_at = row.assigned_at or event.occurred_at
            case d.DepartmentReported():
                row = dispatch(event.dispatch_id)
                row.summoned = True
                row.department_code = row.department_code or event.department_code
                if row.report_on_time is None:
                    row.report_on_time = event.on_time

    state.assigned_area, state.first_completion = assigned_area, first_completion
    state.last = _order(ordered[-1])


def _finish(state: TicketState, *, calendar: WorkCalendar, keep: bool) -> TicketFold:
    """The facts from a state: on copies of its drafts if it is to be ``keep``t. The ticket's
    values are written to its draft's ``__dict__`` directly (a draft's attribute writes go
    through a method: twenty of them a fact were a tenth of the finishing)."""
    if keep:
        fact = _copy_draft(state.fact)
        escalated = {key[0] for key in state.escalations}  # the rows finishing writes to
        dispatches = {
            k: _copy_draft(r) if k in escalated else r for k, r in state.dispatches.items()
        }
    else:
        fact, dispatches = state.fact, state.dispatches
    f = fact.__dict__
    area = f["area_code"] = f["area_code"] or state.assigned_area
    f["district_code"], f["town_code"], f["village_code"], f["grid_code"] = _levels(area)
    if state.ticket_id.startswith(PROACTIVE_PREFIX) or f["handling_line"] == PROACTIVE_LINE:
        f["kind"] = "proactive"
    for key in state.escalations:
        row = dispatches[key[0]]
        row.escalations += 1
        row.max_escalation_level = max(row.max_escalation_level, key[2])
    f["escalations"] = len(state.escalations)
    f["max_escalation_level"] = max((k[2] for k in state.escalations), default=0)
    f["extensions"], f["whistles"] = len(state.extensions), len(state.whistles)
    f["returns"], f["transfers"] = len(state.returns), len(state.transfers)
    # A summons asks a department to report, not to own the ticket: it holds nothing open.
    owning = [r for r in dispatches.values() if not r.summoned or r.mode is not None]
    f["dispatches"] = len(owning)
    signed = [r.signed_at for r in owning if r.signed_at is not None]
    contacted = [r.contacted_at for r in owning if r.contacted_at is not None]
    f["signed_at"] = min(signed, default=None)
    f["first_contact_at"] = min(contacted, default=None)
    done = [r for r in owning if r.completed_at is not None]
    if done and all(r.state in _ENDED for r in owning):
        closing = max(done, key=lambda r: (r.completed_at, r.dispatch_id))
        f["completed"] = True
        f["completed_at"] = closing.completed_at
        f["completed_late"] = bool(closing.complete_late)
        f["mediated"] = closing.completed_via == "mediation"
        f["department_code"] = closing.department_code
        f["department_tier"] = closing.department_tier or f["department_tier"]
        start = f["received_at"] or f["dispatched_at"]
        if start is not None and closing.completed_at is not None:
            f["handling_centidays"] = _handling(state, start, closing.completed_at, calendar)
    _count_callback(f, state.callbacks)
    rows = sorted(dispatches.values(), key=lambda r: str(r.dispatch_id))
    return TicketFold(fact, rows)


def _handling(state: TicketState, start: datetime, end: datetime, calendar: WorkCalendar) -> int:
    """The handling time from ``start`` to ``end`` in hundredths of a working day, kept in
    ``state`` with what it was worked out from and worked out again only when one of those
    changed (a finish writes nothing else to its state)."""
    kept = state.handling
    if kept is not None and kept[0] is calendar and kept[1] == start and kept[2] == end:
        return kept[3]
    centidays = round(working_days_between(start, end, calendar=calendar) * 100)
    state.handling = (calendar, start, end, centidays)
    return centidays


def _count_callback(f: dict[str, Any], callbacks: dict[int, i.FeedbackReceived]) -> None:
    """The counted callback is the latest revision received after completion; without one,
    the fact (its draft's ``__dict__``) keeps the latest revision of all (shown, not
    counted)."""
    if not callbacks:
        return

    def received(event: i.FeedbackReceived) -> datetime:
        return event.received_at or event.occurred_at

    completed_at = f["completed_at"] if f["completed"] else None
    after = [
        c for c in callbacks.values() if completed_at is not None and received(c) >= completed_at
    ]
    chosen = max(after or callbacks.values(), key=lambda c: c.revision)
    f["feedback_id"], f["feedback_revision"] = chosen.feedback_id, chosen.revision
    f["resolved"], f["satisfaction"] = chosen.resolved, chosen.satisfaction
    f["callback_counted"] = bool(after)


def fold_case(case_id: str, events: Iterable[Event]) -> CaseFact:
    """A mediation case's fact from all its events, in any order."""
    fact = CaseFact(case_id=case_id)
    escalations: set[tuple[str, str]] = set()
    for event in sorted(events, key=_order):
        fact.ticket_id = fact.ticket_id or getattr(event, "ticket_id", None)
        match event:
            case m.CaseOpened():
                fact.opened_at = event.occurred_at
                fact.origin = event.origin
                fact.dispute_type = event.dispute_type
                fact.category_code = event.category_code or fact.category_code
                fact.area_code = event.area_code or fact.area_code
                fact.level = fact.level or event.level
            case m.CaseEscalated():
                escalations.add((event.from_level, event.to_level))
                fact.level = event.to_level
                fact.area_code = event.area_code or fact.area_code
            case m.CaseClosed():
                fact.closed_at = event.occurred_at
                fact.outcome = event.outcome
                fact.level = event.level
                fact.area_code = event.area_code or fact.area_code
                fact.category_code = event.category_code or fact.category_code
                fact.dispute_type = event.dispute_type or fact.dispute_type
    fact.escalations = len(escalations)
    levels = area_levels(fact.area_code)
    fact.district_code, fact.town_code = levels["district_code"], levels["town_code"]
    return fact
