"""The fold of a ticket's events: the same facts whatever the order, repetition or replay."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.evaluation import cells
from services.evaluation.facts import fold_case, fold_ticket
from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event
from shared.workcalendar import OFFICIAL

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Monday 09:00 in Shanghai
GRID = "330602001001001"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def life(ticket: str) -> list[Event]:
    """Received, assigned, returned, re-routed, transferred, extended, escalated, completed,
    called back twice (once before completion)."""
    return [
        i.TicketReceived(
            ticket_id=ticket,
            channel="hotline-12345-phone",
            received_at=T0,
            occurred_at=T0,
            title="t",
            content="c",
            category_code="0103",
            location=i.Location(grid_code=GRID),
            repeat_of=None,
        ),
        d.TicketAssigned(
            ticket_id=ticket,
            dispatch_id="D1",
            department_code="A",
            department_tier="district",
            category_code="0103",
            channel="hotline-12345-phone",
            occurred_at=at(1),
            time_limit_profile="urgent",
        ),
        d.DispatchSigned(
            ticket_id=ticket, dispatch_id="D1", department_code="A", occurred_at=at(2)
        ),
        d.ReturnDecided(
            ticket_id=ticket,
            dispatch_id="D1",
            department_code="A",
            approved=True,
            occurred_at=at(3),
        ),
        d.TicketAssigned(
            ticket_id=ticket,
            dispatch_id="D2",
            department_code="B",
            department_tier="town",
            category_code="0103",
            channel="hotline-12345-phone",
            occurred_at=at(4),
            mode="reroute",
        ),
        d.DispatchSigned(
            ticket_id=ticket, dispatch_id="D2", department_code="B", late=True, occurred_at=at(5)
        ),
        d.DispatchTransferred(
            ticket_id=ticket,
            dispatch_id="D2",
            from_department="B",
            to_department="C",
            new_dispatch_id="D3",
            reason="r",
            occurred_at=at(6),
        ),
        d.TicketAssigned(
            ticket_id=ticket,
            dispatch_id="D3",
            department_code="C",
            department_tier="village",
            category_code="0103",
            channel="hotline-12345-phone",
            occurred_at=at(6),
            mode="transfer",
        ),
        d.ExtensionDecided(
            ticket_id=ticket,
            dispatch_id="D3",
            department_code="C",
            request_id=1,
            clock="resolution",
            approved=True,
            old_due_at=at(30),
            new_due_at=at(60),
            occurred_at=at(7),
        ),
        d.DispatchEscalated(
            ticket_id=ticket,
            dispatch_id="D3",
            department_code="C",
            clock="first_contact",
            level=1,
            due_at=at(8),
            occurred_at=at(9),
        ),
        i.FeedbackReceived(
            ticket_id=ticket,
            feedback_id="F1",
            revision=1,
            resolved=False,
            satisfaction="dissatisfied",
            occurred_at=at(10),
        ),
        d.DispatchCompleted(
            ticket_id=ticket,
            dispatch_id="D3",
            department_code="C",
            result="done",
            occurred_at=at(26),
        ),
        i.FeedbackReceived(
            ticket_id=ticket,
            feedback_id="F2",
            revision=2,
            resolved=True,
            satisfaction="basically_satisfied",
            occurred_at=at(30),
        ),
    ]


def snapshot(events: list[Event]) -> Any:
    fold = fold_ticket("T1", events, calendar=OFFICIAL)
    return (
        fold.ticket.model_dump(),
        [r.model_dump() for r in fold.dispatches],
        sorted((s.cell_key, sorted(s.counters.items())) for s in cells.ticket_shares(fold)),
    )


def test_any_order_and_any_repetition_fold_to_the_same_facts() -> None:
    events = life("T1")
    expected = snapshot(events)
    rng = random.Random(7)
    for _ in range(50):
        shuffled = events + [
            e.model_copy(update={"event_id": uuid.uuid4()}) for e in rng.sample(events, 4)
        ]
        rng.shuffle(shuffled)
        assert snapshot(shuffled) == expected


def test_the_fold_reads_what_the_committee_counts() -> None:
    fold = fold_ticket("T1", life("T1"), calendar=OFFICIAL)
    t = fold.ticket
    # The profile is the latest assignment's (D3 was timed on the standard clocks).
    assert (t.kind, t.time_limit_profile, t.department_code, t.department_tier) == (
        "appeal",
        "standard",
        "C",
        "village",
    )
    assert (t.returns, t.transfers, t.extensions, t.escalations) == (1, 1, 1, 1)
    assert (t.completed, t.completed_late, t.callback_counted) == (True, False, True)
    assert (t.feedback_id, t.satisfaction) == ("F2", "basically_satisfied")
    # Monday 09:00 to Tuesday 11:00 Shanghai: 15/24 + 11/24 of a working day.
    assert t.handling_centidays == round((15 + 11) / 24 * 100)
    assert (t.district_code, t.town_code, t.village_code) == ("330602", "330602001", "330602001001")
    counters = cells.ticket_counters(t)
    assert counters["closed_village"] == counters["closed_town"] == 1
    assert counters["one_time"] == 0  # it was returned
    by_id = {r.dispatch_id: cells.dispatch_counters(r) for r in fold.dispatches}
    assert by_id["D1"]["sign_on_time"] == 1 and by_id["D2"]["sign_on_time"] == 0
    assert by_id["D3"]["contact_due"] == 1 and by_id["D3"]["contact_on_time"] == 0


def test_a_callback_on_an_open_ticket_is_kept_but_not_counted() -> None:
    events = life("T1")[:-3]  # not completed yet; only the first callback
    events.append(life("T1")[-3])
    t = fold_ticket("T1", events, calendar=OFFICIAL).ticket
    assert (t.feedback_id, t.callback_counted, t.completed) == ("F1", False, False)
    counters = cells.ticket_counters(t)
    assert counters["callbacks"] == 0 and counters["callbacks_on_open"] == 1


def test_proactive_dispatches_are_their_own_kind() -> None:
    event = d.TicketAssigned(
        ticket_id="P-1",
        dispatch_id="DP",
        department_code="A",
        department_tier="town",
        category_code="0103",
        channel="proactive",
        occurred_at=T0,
    )
    assert fold_ticket("P-1", [event], calendar=OFFICIAL).ticket.kind == "proactive"


def test_a_walk_in_case_counts_in_mediation() -> None:
    events: list[Event] = [
        m.CaseOpened(case_id="K1", origin="walk_in", area_code="330602001", occurred_at=T0),
        m.CaseClosed(case_id="K1", outcome="agreed", level="town", occurred_at=at(5)),
    ]
    fact = fold_case("K1", reversed(events))
    assert (fact.ticket_id, fact.outcome, fact.town_code) == (None, "agreed", "330602001")
    shares = cells.case_shares(fact)
    succeeded = [s for s in shares if s.counters.get("cases_succeeded")]
    assert sorted(s.grain for s in succeeded) == sorted(g.name for g in cells.GRAINS)  # one each
