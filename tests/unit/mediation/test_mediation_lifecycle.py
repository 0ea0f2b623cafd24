"""The case lifecycle as a pure state machine: every path a centre walks, every refusal named."""

from __future__ import annotations

import pytest

from services.mediation.lifecycle import (
    LEVELS,
    Action,
    CaseState,
    IllegalTransition,
    Status,
    allowed_actions,
    apply,
    can_apply,
    next_level,
)


def walk(state: CaseState, *actions: Action) -> CaseState:
    for action in actions:
        state = apply(state, action)
    return state


def test_a_written_agreement_confirmed_and_fulfilled_closes_as_fulfilled() -> None:
    end = walk(
        CaseState(Status.ACCEPTED),
        Action.START,
        Action.AGREE,
        Action.CONFIRM,
        Action.FULFIL,
        Action.CLOSE,
    )
    assert end.status is Status.CLOSED
    assert end.outcome == "fulfilled"


def test_a_verbal_agreement_needs_no_session_and_may_close_unconfirmed() -> None:
    end = walk(CaseState(Status.ACCEPTED, level="village"), Action.AGREE, Action.CLOSE)
    assert (end.status, end.outcome, end.level) == (Status.CLOSED, "agreed", "village")


def test_a_breach_counts_and_reopens_or_refers() -> None:
    breached = walk(CaseState(Status.IN_MEDIATION), Action.AGREE, Action.BREACH)
    assert (breached.status, breached.breaches) == (Status.BREACHED, 1)
    again = walk(breached, Action.REOPEN, Action.AGREE, Action.BREACH)
    assert again.breaches == 2
    referred = walk(again, Action.REFER, Action.CLOSE)
    assert (referred.status, referred.outcome) == (Status.CLOSED, "referred")


def test_escalation_climbs_one_level_at_a_time_and_starts_over_as_accepted() -> None:
    state = CaseState(Status.IN_MEDIATION, level="village")
    state = apply(state, Action.ESCALATE)
    assert (state.status, state.level, state.escalations) == (Status.ACCEPTED, "town", 1)
    failed = apply(state, Action.FAIL)
    state = apply(failed, Action.ESCALATE)
    assert (state.level, state.escalations) == ("district", 2)
    city = walk(state, Action.ESCALATE)
    assert city.level == "city"
    with pytest.raises(IllegalTransition, match="city level"):
        apply(city, Action.ESCALATE)


def test_withdrawn_and_failed_cases_close_with_their_outcome() -> None:
    assert walk(CaseState(Status.ACCEPTED), Action.WITHDRAW, Action.CLOSE).outcome == "withdrawn"
    assert walk(CaseState(Status.ACCEPTED), Action.FAIL, Action.CLOSE).outcome == "failed"


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (Status.CLOSED, Action.START),  # a session for a closed case
        (Status.ACCEPTED, Action.CONFIRM),  # a court confirms an agreement, not a dispute
        (Status.AGREED, Action.AGREE),
        (Status.FULFILLED, Action.BREACH),
        (Status.IN_MEDIATION, Action.CLOSE),  # an open mediation ends first
        (Status.REFERRED, Action.REOPEN),
        (Status.WITHDRAWN, Action.ESCALATE),
    ],
)
def test_illegal_moves_are_refused_naming_the_state(status: Status, action: Action) -> None:
    with pytest.raises(IllegalTransition) as refused:
        apply(CaseState(status), action)
    assert status.value in str(refused.value)
    assert refused.value.body()["current_status"] == status.value
    assert not can_apply(CaseState(status), action)


def test_every_status_but_closed_allows_something_and_closed_allows_nothing() -> None:
    for status in Status:
        assert bool(allowed_actions(status)) is (status is not Status.CLOSED), status


def test_levels_run_village_to_city() -> None:
    assert LEVELS == ("village", "town", "district", "city")
    assert [next_level(level) for level in LEVELS] == ["town", "district", "city", None]
