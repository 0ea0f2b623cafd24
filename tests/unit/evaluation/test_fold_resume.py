"""A ticket's new events folded onto its state of before (``service.resume``) give the very facts
a fold of its whole ledger gives, whatever the batches, their order, the repeats and the events
older than the last one folded; a batch that never commits leaves a state that must not be
taken for the ledger's."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.evaluation import service
from services.evaluation.facts import TicketFold, finish, fold_more, fold_state, fold_ticket
from services.evaluation.service import Folded
from shared.events import dispatch as d
from shared.events.base import Event
from shared.workcalendar import OFFICIAL, WorkCalendar
from tests.unit.evaluation.test_fold import at, life


def _more(ticket: str) -> list[Event]:
    """Events ``life`` leaves out: a contact, a withdrawal, supervision, focus, a whistle and
    its report."""
    return [
        d.CitizenContacted(
            ticket_id=ticket, dispatch_id="D1", department_code="A", occurred_at=at(2)
        ),
        d.DispatchWithdrawn(ticket_id=ticket, dispatch_id="D2", reason="r", occurred_at=at(5)),
        d.DispatchSupervised(ticket_id=ticket, dispatch_id="D3", note="n", occurred_at=at(8)),
        d.DispatchFocused(ticket_id=ticket, dispatch_id="D3", occurred_at=at(8)),
        d.WhistleBlown(
            ticket_id=ticket,
            whistle_id="W1",
            blown_by_role="town",
            reason="r",
            summons=(d.Summons(department_code="E", dispatch_id="D9", report_due_at=at(12)),),
            occurred_at=at(9),
        ),
        d.DepartmentReported(
            ticket_id=ticket,
            whistle_id="W1",
            dispatch_id="D9",
            department_code="E",
            report_due_at=at(12),
            reported_at=at(11),
            on_time=True,
            occurred_at=at(11),
        ),
    ]


POOL = life("T1") + _more("T1")

Resume = Callable[[Folded | None, set[str], Mapping[str, Event]], Folded | None]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[list[Event]], list[bool]]:
    """Some of a ticket's events (some at other times, so that ties and any order occur; some
    replayed under a new id), delivered in batches in any order, some events twice; and for
    each batch whether it rolls back."""
    events: list[Event] = []
    for index in draw(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=14)):
        event = POOL[index]
        hours = draw(st.one_of(st.none(), st.integers(0, 30)))
        update: dict[str, Any] = {"event_id": uuid.uuid4()}
        if hours is not None:
            update["occurred_at"] = at(hours)
        events.append(event.model_copy(update=update))
    repeats = draw(st.lists(st.sampled_from(events), max_size=4))
    delivered = draw(st.permutations(events + repeats))
    if draw(st.booleans()):  # mostly in time order, as a live stream: most batches resume
        delivered.sort(key=lambda e: e.occurred_at)
        for _ in range(draw(st.integers(0, 2))):  # and a few arrive late
            places = st.integers(0, len(delivered) - 1)
            a, b = draw(places), draw(places)
            delivered[a], delivered[b] = delivered[b], delivered[a]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(delivered) - 1)), max_size=6)))
    batches = [delivered[a:b] for a, b in zip([0, *cuts], [*cuts, len(delivered)], strict=True)]
    batches = [b for b in batches if b]
    lost = [draw(st.sampled_from((False, False, False, True))) for _ in batches]
    return batches, lost


def _fields(fold: TicketFold) -> Any:
    return dict(fold.draft.__dict__), [dict(r.__dict__) for r in fold.dispatch_drafts]


def _replay(batches: list[list[Event]], lost: list[bool], rule: Resume) -> None:
    """Apply ``batches`` as the live path does — the ledger refuses an id it holds; the state
    kept is the one the last batch made, committed or not — and after every committed batch
    compare the facts with the fold of the whole ledger, field for field."""
    ledger: dict[str, Event] = {}
    kept: Folded | None = None
    for batch, rolls_back in zip(batches, lost, strict=True):
        new = list({str(e.event_id): e for e in batch if str(e.event_id) not in ledger}.values())
        if not new:
            continue
        after = ledger | {str(e.event_id): e for e in new}
        folded = rule(kept, set(after), {str(e.event_id): e for e in new})
        if folded is None:
            folded = Folded(fold_state("T1", after.values()), frozenset(after))
        kept = folded
        if rolls_back:
            continue
        ledger = after
        expected = _fields(fold_ticket("T1", ledger.values(), calendar=OFFICIAL))
        assert _fields(finish(folded.state, calendar=OFFICIAL)) == expected
        # Finishing leaves the state as it was: the same facts again.
        assert _fields(finish(folded.state, calendar=OFFICIAL)) == expected


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_new_events_folded_onto_the_state_give_the_whole_ledger_s_facts(
    case: tuple[list[list[Event]], list[bool]],
) -> None:
    _replay(*case, rule=service.resume)


def _regardless_of_order(
    prior: Folded | None, held: set[str], new: Mapping[str, Event]
) -> Folded | None:
    """A wrong rule: the new events folded onto the state even when one is older than the
    last one folded."""
    if prior is None or held != prior.ids.union(new):
        return None
    prior.state.last = None  # as if every new event came after
    assert fold_more(prior.state, new.values())
    return Folded(prior.state, frozenset(held))


def _trusting(prior: Folded | None, held: set[str], new: Mapping[str, Event]) -> Folded | None:
    """A wrong rule: the state kept trusted without comparing its events with the ledger's."""
    return service.resume(prior, prior.ids.union(new) if prior else set(held), new)


@pytest.mark.parametrize("rule", [_regardless_of_order, _trusting])
def test_the_property_catches_a_wrong_rule(rule: Resume) -> None:
    @settings(max_examples=500, deadline=None, database=None, derandomize=True)
    @given(deliveries())
    def replay(case: tuple[list[list[Event]], list[bool]]) -> None:
        _replay(*case, rule=rule)

    with pytest.raises(AssertionError):
        replay()


def test_an_older_event_refolds_and_a_rolled_back_state_is_not_resumed() -> None:
    assigned, signed, returned = POOL[1], POOL[2], POOL[3]  # D1: hours 1, 2 and 3
    ids = {str(e.event_id): e for e in (assigned, signed, returned)}
    a, s, r = ids

    def kept() -> Folded:
        return Folded(fold_state("T1", [signed]), frozenset({s}))

    assert service.resume(None, {s}, {s: signed}) is None  # nothing kept
    older = kept()
    assert service.resume(older, {a, s}, {a: assigned}) is None  # older than the last folded
    assert not older.spent  # and left as it was
    # Not the ledger's: the kept state's event is not in it (its batch rolled back).
    assert service.resume(kept(), {r}, {r: returned}) is None
    # Another consumer's event in the ledger that the kept state does not hold.
    assert service.resume(kept(), {a, s, r}, {r: returned}) is None
    later = kept()
    resumed = service.resume(later, {s, r}, {r: returned})
    assert resumed is not None and resumed.ids == {s, r} and later.spent
    assert service.resume(later, {s, r, a}, {a: assigned}) is None  # spent: folded onto once


def test_the_kept_handling_time_is_worked_out_again_when_its_span_or_calendar_changes() -> None:
    """A finish keeps the handling time in the state (every event after completion finishes it
    again); an event that moves the span's start (a receipt delivered after the completion) or
    its end (the ticket reopened and completed again), or a finish with another calendar,
    works it out again: the facts stay those of the whole fold, and each step changes them."""
    received, *steps = life("T1")  # completed at hour 26 (Tuesday 11:00 in Shanghai)
    holiday = WorkCalendar(extra_holidays=frozenset({date(2026, 11, 24)}))  # that Tuesday
    folded: list[Event] = []
    state = fold_state("T1", [])
    seen: list[int | None] = []

    def fold_and_compare(events: list[Event], calendar: WorkCalendar = OFFICIAL) -> None:
        assert fold_more(state, events)
        folded.extend(events)
        whole = fold_ticket("T1", folded, calendar=calendar)
        assert _fields(finish(state, calendar=calendar)) == _fields(whole)
        seen.append(whole.draft.handling_centidays)

    fold_and_compare(steps)  # timed from the first assignment (hour 1): no receipt yet
    late_receipt = received.model_copy(
        update={"event_id": uuid.uuid4(), "received_at": at(-72), "occurred_at": at(31)}
    )
    fold_and_compare([late_receipt])  # timed from the Friday before
    assigned, completed = steps[6], steps[-2]  # D3's assignment and completion
    assert isinstance(assigned, d.TicketAssigned) and isinstance(completed, d.DispatchCompleted)

    def again(event: Event, hours: int) -> Event:  # of a new dispatch, D4
        changes = {"event_id": uuid.uuid4(), "dispatch_id": "D4", "occurred_at": at(hours)}
        return event.model_copy(update=changes)

    fold_and_compare([again(assigned, 32)])  # open again: no handling time written
    fold_and_compare([again(completed, 50)])  # completed a day later
    fold_and_compare([], calendar=holiday)  # that Tuesday a holiday
    fold_and_compare([])  # and back
    assert seen == [104, 208, None, 308, 208, 308]  # hundredths of a working day
