"""The dispatch state machine: every (status, action) pair, request/decision round trips,
centre pressure, and the escalation path up the tiers."""

from __future__ import annotations

import itertools

import pytest

from services.dispatch.deadlines.profiles import ClockName
from services.dispatch.organisation.chart import default_org
from services.dispatch.workflow import (
    ACTOR,
    CLOCK_STOPPED_BY,
    TERMINAL,
    Action,
    Actor,
    DispatchState,
    IllegalTransition,
    Status,
    allowed_actions,
    apply,
    can_apply,
    escalation_path,
    escalation_target,
    initial_state,
)

S, A = Status, Action
SAME = "same"  # the status does not change
RESUME = "resume"  # back to the status the request was made from

# The whole machine written out by hand: action -> {allowed source status: resulting status}.
# Every pair not listed must raise IllegalTransition.
OPEN_WORK = (S.SIGNED, S.IN_PROGRESS, S.CONTACTED)
ALL_OPEN = (
    S.PENDING_GRAB,
    S.ASSIGNED,
    *OPEN_WORK,
    S.EXTENSION_REQUESTED,
    S.RETURN_REQUESTED,
    S.SUMMONED,
)
EXPECTED: dict[Action, dict[Status, Status | str]] = {
    A.GRAB: {S.PENDING_GRAB: S.SIGNED},
    A.ASSIGN: {S.PENDING_GRAB: S.ASSIGNED},
    A.SIGN_FOR: {S.ASSIGNED: S.SIGNED},
    A.RETURN_REQUEST: {S.ASSIGNED: S.RETURN_REQUESTED, S.SIGNED: S.RETURN_REQUESTED},
    A.RETURN_APPROVE: {S.RETURN_REQUESTED: S.RETURNED},
    A.RETURN_DENY: {S.RETURN_REQUESTED: RESUME},
    A.TRANSFER: {s: S.TRANSFERRED for s in (S.ASSIGNED, *OPEN_WORK)},
    A.EXTENSION_REQUEST: {s: S.EXTENSION_REQUESTED for s in OPEN_WORK},
    A.EXTENSION_APPROVE: {S.EXTENSION_REQUESTED: RESUME},
    A.EXTENSION_DENY: {S.EXTENSION_REQUESTED: RESUME},
    A.PROGRESS: {S.SIGNED: S.IN_PROGRESS, S.IN_PROGRESS: S.IN_PROGRESS, S.CONTACTED: S.CONTACTED},
    A.CONTACT: {s: S.CONTACTED for s in OPEN_WORK},
    A.COMPLETE: {s: S.COMPLETED for s in OPEN_WORK},
    A.WITHDRAW: {s: S.WITHDRAWN for s in ALL_OPEN},
    A.SUPERVISE: {s: SAME for s in ALL_OPEN if s is not S.SUMMONED},
    A.FOCUS: {s: SAME for s in ALL_OPEN if s is not S.SUMMONED},
    A.ESCALATE: {s: SAME for s in ALL_OPEN},
    A.WHISTLE: {s: SAME for s in OPEN_WORK},
    A.REPORT: {S.SUMMONED: S.REPORTED},
}
PAIRS = list(itertools.product(Status, Action))


# Requests remember the status they were made from.
RESUME_FROM = {S.EXTENSION_REQUESTED: S.IN_PROGRESS, S.RETURN_REQUESTED: S.SIGNED}


def state_in(status: Status) -> DispatchState:
    return DispatchState(status, resume=RESUME_FROM.get(status))


def test_the_expected_table_covers_every_action() -> None:
    assert set(EXPECTED) == set(Action)


@pytest.mark.parametrize(
    ("status", "action"),
    [(s, a) for s, a in PAIRS if s in EXPECTED[a]],
    ids=lambda v: str(v),
)
def test_allowed_transitions(status: Status, action: Action) -> None:
    before = state_in(status)
    after = apply(before, action)
    expected = EXPECTED[action][status]
    if expected == SAME:
        assert after.status is status
    elif expected == RESUME:
        assert after.status is before.resume
        assert after.resume is None
    else:
        assert after.status is expected
    assert can_apply(before, action)
    assert action in allowed_actions(status)


@pytest.mark.parametrize(
    ("status", "action"),
    [(s, a) for s, a in PAIRS if s not in EXPECTED[a]],
    ids=lambda v: str(v),
)
def test_illegal_transitions_raise_naming_the_current_state(status: Status, action: Action) -> None:
    with pytest.raises(IllegalTransition) as caught:
        apply(state_in(status), action)
    assert caught.value.current is status
    assert caught.value.action is action
    assert f"cannot {action.value} a dispatch that is {status.value}" in str(caught.value)
    assert not can_apply(state_in(status), action)


def test_complete_before_sign_for_is_the_classic_409() -> None:
    with pytest.raises(IllegalTransition, match="cannot complete a dispatch that is assigned"):
        apply(initial_state(), Action.COMPLETE)
    with pytest.raises(IllegalTransition, match="allowed from: contacted, in_progress, signed"):
        apply(initial_state(), Action.COMPLETE)


def test_terminal_statuses_allow_nothing() -> None:
    assert TERMINAL
    for status in TERMINAL:
        assert allowed_actions(status) == []


# ---- round trips and counters --------------------------------------------------------------


def test_happy_path() -> None:
    state = initial_state()
    for action in (A.SIGN_FOR, A.PROGRESS, A.CONTACT, A.PROGRESS, A.COMPLETE):
        state = apply(state, action)
    assert state.status is S.COMPLETED


def test_extension_returns_to_where_it_was_asked_and_counts_grants() -> None:
    contacted = DispatchState(S.CONTACTED)
    asked = apply(contacted, A.EXTENSION_REQUEST)
    assert (asked.status, asked.resume) == (S.EXTENSION_REQUESTED, S.CONTACTED)
    granted = apply(asked, A.EXTENSION_APPROVE)
    assert (granted.status, granted.resume, granted.extensions_granted) == (S.CONTACTED, None, 1)
    denied = apply(apply(granted, A.EXTENSION_REQUEST), A.EXTENSION_DENY)
    assert (denied.status, denied.extensions_granted) == (S.CONTACTED, 1)


def test_return_denied_goes_back_to_assigned_and_approved_ends_the_dispatch() -> None:
    asked = apply(initial_state(), A.RETURN_REQUEST)
    assert asked.resume is S.ASSIGNED
    assert apply(asked, A.RETURN_DENY).status is S.ASSIGNED
    assert apply(asked, A.RETURN_APPROVE).status is S.RETURNED


def test_a_return_cannot_be_asked_once_work_has_started() -> None:
    with pytest.raises(IllegalTransition, match="in_progress"):
        apply(DispatchState(S.IN_PROGRESS), A.RETURN_REQUEST)


def test_progress_never_undoes_the_contact_milestone() -> None:
    assert apply(DispatchState(S.CONTACTED), A.PROGRESS).status is S.CONTACTED


def test_grab_pool_grab_signs_and_timeout_assigns_under_supervision() -> None:
    pool = initial_state(grab=True)
    assert pool.status is S.PENDING_GRAB
    assert apply(pool, A.GRAB).status is S.SIGNED
    assigned = apply(pool, A.ASSIGN)
    assert (assigned.status, assigned.supervised) == (S.ASSIGNED, True)


def test_centre_pressure_is_recorded_without_moving_the_status() -> None:
    state = DispatchState(S.IN_PROGRESS)
    state = apply(apply(state, A.SUPERVISE), A.SUPERVISE)
    state = apply(apply(state, A.FOCUS), A.FOCUS)  # focusing twice is harmless
    state = apply(apply(state, A.ESCALATE), A.ESCALATE)
    state = apply(state, A.WHISTLE)
    assert state == DispatchState(
        S.IN_PROGRESS,
        supervised=True,
        supervision_count=2,
        focused=True,
        escalation_level=2,
        whistles=1,
    )


def test_a_summons_reports_and_a_late_one_can_be_escalated() -> None:
    summons = initial_state(summoned=True)
    assert apply(summons, A.REPORT).status is S.REPORTED
    assert apply(summons, A.ESCALATE).escalation_level == 1
    with pytest.raises(IllegalTransition, match="summoned"):
        apply(summons, A.SIGN_FOR)


def test_initial_state_is_one_thing() -> None:
    with pytest.raises(ValueError):
        initial_state(grab=True, summoned=True)


def test_actors() -> None:
    assert set(ACTOR) == set(Action)
    centre = {a for a, who in ACTOR.items() if who is Actor.CENTRE}
    assert centre == {
        A.RETURN_APPROVE,
        A.RETURN_DENY,
        A.EXTENSION_APPROVE,
        A.EXTENSION_DENY,
        A.WITHDRAW,
        A.SUPERVISE,
        A.FOCUS,
    }
    assert ACTOR[A.ESCALATE] is Actor.SYSTEM
    assert ACTOR[A.SIGN_FOR] is Actor.DEPARTMENT


def test_every_clock_is_stopped_by_something() -> None:
    assert set(CLOCK_STOPPED_BY) == set(ClockName)
    assert A.COMPLETE in CLOCK_STOPPED_BY[ClockName.RESOLUTION]
    assert CLOCK_STOPPED_BY[ClockName.REPORT] == {A.REPORT}


# ---- escalation up the tiers --------------------------------------------------------------

ORG = default_org()
GRID = "339902001001002"
VILLAGE, TOWN, DISTRICT = GRID[:12], GRID[:9], GRID[:6]


@pytest.mark.parametrize(
    ("department", "path"),
    [
        (
            f"GRID-WG-{GRID}",
            [f"VIL-JW-{VILLAGE}", f"TOWN-ZZ-{TOWN}", f"DIST-ZZ-{DISTRICT}", "CITY-12345"],
        ),
        (
            f"VIL-TW-{VILLAGE}",
            [f"VIL-JW-{VILLAGE}", f"TOWN-ZZ-{TOWN}", f"DIST-ZZ-{DISTRICT}", "CITY-12345"],
        ),
        (f"VIL-JW-{VILLAGE}", [f"TOWN-ZZ-{TOWN}", f"DIST-ZZ-{DISTRICT}", "CITY-12345"]),
        (f"TOWN-SFS-{TOWN}", [f"TOWN-ZZ-{TOWN}", f"DIST-ZZ-{DISTRICT}", "CITY-12345"]),
        (f"TOWN-ZZ-{TOWN}", [f"DIST-ZZ-{DISTRICT}", "CITY-12345"]),
        (f"DIST-ZF-{DISTRICT}", [f"DIST-ZZ-{DISTRICT}", "CITY-12345"]),
        ("CITY-ZF", ["CITY-12345"]),
        ("CITY-12345", []),
    ],
)
def test_escalation_path_climbs_village_town_district_city(
    department: str, path: list[str]
) -> None:
    assert [d.code for d in escalation_path(department, ORG)] == path


def test_escalation_target_by_level() -> None:
    worker = f"GRID-WG-{GRID}"
    assert escalation_target(worker, 1, ORG).code == f"VIL-JW-{VILLAGE}"  # type: ignore[union-attr]
    assert escalation_target(worker, 4, ORG).code == "CITY-12345"  # type: ignore[union-attr]
    assert escalation_target(worker, 5, ORG) is None
    with pytest.raises(ValueError):
        escalation_target(worker, 0, ORG)
