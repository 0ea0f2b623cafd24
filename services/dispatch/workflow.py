"""The pure state machine of one dispatch, and the escalation path up the tiers.

A dispatch is one department's share of a ticket. ``apply(state, action)`` returns the next
state or raises ``IllegalTransition`` naming the current state (the API answers 409 with it).
Who may take an action (the department, the centre, the system) is in ``ACTOR``; checking it
against the caller is the service's job.

Centre pressure — supervise (督办), focus (重点办), escalate — does not move the status: the
department stays responsible ("矛盾不上交"), the state only records that pressure was applied.
Escalation goes to the centres over the department's jurisdiction, nearest first
(village → town → district → city), see ``escalation_path``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from services.dispatch.deadlines.profiles import ClockName
from services.dispatch.organisation.chart import Department, OrgChart
from shared.errors import DomainError


class Status(StrEnum):
    """Where a dispatch stands."""

    PENDING_GRAB = "pending_grab"  # in the grab pool (抢单池)
    ASSIGNED = "assigned"  # dispatched, waiting to be signed for (待签收)
    SIGNED = "signed"  # signed for (已签收)
    IN_PROGRESS = "in_progress"  # progress noted (办理中)
    CONTACTED = "contacted"  # the citizen has been contacted (已联系)
    EXTENSION_REQUESTED = "extension_requested"  # waiting for the centre (延期审核中)
    RETURN_REQUESTED = "return_requested"  # waiting for the centre (退单审核中)
    RETURNED = "returned"  # return approved; the ticket is re-routed without this department
    TRANSFERRED = "transferred"  # handed to another department; a new dispatch takes over
    COMPLETED = "completed"  # 办结
    WITHDRAWN = "withdrawn"  # closed by the centre: duplicate ticket or the citizen withdrew
    SUMMONED = "summoned"  # whistle: summoned to report (吹哨待报到)
    REPORTED = "reported"  # whistle: reported (已报到)


class Action(StrEnum):
    """What can be done to a dispatch."""

    GRAB = "grab"
    ASSIGN = "assign"  # the grab window ran out: assign and supervise (督着办)
    SIGN_FOR = "sign_for"
    RETURN_REQUEST = "return_request"
    RETURN_APPROVE = "return_approve"
    RETURN_DENY = "return_deny"
    TRANSFER = "transfer"
    EXTENSION_REQUEST = "extension_request"
    EXTENSION_APPROVE = "extension_approve"
    EXTENSION_DENY = "extension_deny"
    PROGRESS = "progress"
    CONTACT = "contact"
    COMPLETE = "complete"
    WITHDRAW = "withdraw"
    SUPERVISE = "supervise"
    FOCUS = "focus"
    ESCALATE = "escalate"
    WHISTLE = "whistle"  # the handler summons other departments; they get their own dispatches
    REPORT = "report"  # a summoned department reports


class Actor(StrEnum):
    """Who may take an action."""

    DEPARTMENT = "department"  # the department the dispatch belongs to
    CENTRE = "centre"  # a dispatch centre over it
    SYSTEM = "system"  # the scheduler or an event handler (e.g. a mediated agreement)


TERMINAL = frozenset(
    {Status.RETURNED, Status.TRANSFERRED, Status.COMPLETED, Status.WITHDRAWN, Status.REPORTED}
)
# Signed-for work, in the order its milestones are reached.
WORKING = frozenset({Status.SIGNED, Status.IN_PROGRESS, Status.CONTACTED})
AWAITING_CENTRE = frozenset({Status.EXTENSION_REQUESTED, Status.RETURN_REQUESTED})
OPEN = frozenset(Status) - TERMINAL


@dataclass(frozen=True, slots=True)
class DispatchState:
    """A dispatch's status plus what the status alone cannot hold."""

    status: Status
    # The working status a pending request returns to when the centre decides it.
    resume: Status | None = None
    supervised: bool = False  # 督着办 / 督办 applied at least once
    supervision_count: int = 0
    focused: bool = False  # 重点办
    escalation_level: int = 0  # how many steps up escalation_path it has gone
    whistles: int = 0
    extensions_granted: int = 0


class IllegalTransition(DomainError):
    """An action the dispatch's current status does not allow (409, naming the status)."""

    def __init__(self, current: Status, action: Action) -> None:
        self.current = current
        self.action = action
        allowed = sorted(s.value for s in _RULES[action].sources)
        super().__init__(
            f"cannot {action.value} a dispatch that is {current.value}; "
            f"{action.value} is allowed from: {', '.join(allowed)}"
        )

    def body(self) -> dict[str, Any]:
        return {**super().body(), "current_status": self.current.value, "action": self.action.value}


@dataclass(frozen=True, slots=True)
class _Rule:
    sources: frozenset[Status]
    target: Status | None  # None: stay in the current status
    actor: Actor


def _rule(sources: set[Status] | frozenset[Status], target: Status | None, actor: Actor) -> _Rule:
    return _Rule(frozenset(sources), target, actor)


_BEFORE_WORK = {Status.ASSIGNED, Status.SIGNED}
_PRESSURE = OPEN - {Status.SUMMONED}

_RULES: dict[Action, _Rule] = {
    Action.GRAB: _rule({Status.PENDING_GRAB}, Status.SIGNED, Actor.DEPARTMENT),
    Action.ASSIGN: _rule({Status.PENDING_GRAB}, Status.ASSIGNED, Actor.SYSTEM),
    Action.SIGN_FOR: _rule({Status.ASSIGNED}, Status.SIGNED, Actor.DEPARTMENT),
    # A return is for work that is not yours: ask before you start, not halfway through.
    Action.RETURN_REQUEST: _rule(_BEFORE_WORK, Status.RETURN_REQUESTED, Actor.DEPARTMENT),
    Action.RETURN_APPROVE: _rule({Status.RETURN_REQUESTED}, Status.RETURNED, Actor.CENTRE),
    Action.RETURN_DENY: _rule({Status.RETURN_REQUESTED}, None, Actor.CENTRE),
    Action.TRANSFER: _rule(_BEFORE_WORK | WORKING, Status.TRANSFERRED, Actor.DEPARTMENT),
    Action.EXTENSION_REQUEST: _rule(WORKING, Status.EXTENSION_REQUESTED, Actor.DEPARTMENT),
    Action.EXTENSION_APPROVE: _rule({Status.EXTENSION_REQUESTED}, None, Actor.CENTRE),
    Action.EXTENSION_DENY: _rule({Status.EXTENSION_REQUESTED}, None, Actor.CENTRE),
    Action.PROGRESS: _rule(WORKING, None, Actor.DEPARTMENT),
    Action.CONTACT: _rule(WORKING, Status.CONTACTED, Actor.DEPARTMENT),
    Action.COMPLETE: _rule(WORKING, Status.COMPLETED, Actor.DEPARTMENT),
    Action.WITHDRAW: _rule(OPEN, Status.WITHDRAWN, Actor.CENTRE),
    Action.SUPERVISE: _rule(_PRESSURE, None, Actor.CENTRE),
    Action.FOCUS: _rule(_PRESSURE, None, Actor.CENTRE),
    Action.ESCALATE: _rule(OPEN, None, Actor.SYSTEM),
    Action.WHISTLE: _rule(WORKING, None, Actor.DEPARTMENT),
    Action.REPORT: _rule({Status.SUMMONED}, Status.REPORTED, Actor.DEPARTMENT),
}

ACTOR: dict[Action, Actor] = {action: rule.actor for action, rule in _RULES.items()}

# Which action stops which clock; a clock not stopped by its deadline is missed.
CLOCK_STOPPED_BY: dict[ClockName, frozenset[Action]] = {
    ClockName.SIGN_FOR: frozenset({Action.SIGN_FOR, Action.GRAB}),
    ClockName.FIRST_CONTACT: frozenset({Action.CONTACT}),
    ClockName.FEEDBACK: frozenset({Action.PROGRESS, Action.CONTACT, Action.COMPLETE}),
    ClockName.RESOLUTION: frozenset({Action.COMPLETE}),
    ClockName.REPORT: frozenset({Action.REPORT}),
}


def actor_of(action: Action) -> Actor:
    """Who takes ``action``: the handling department, a centre over it, or the system."""
    return _RULES[action].actor


def initial_state(*, grab: bool = False, summoned: bool = False) -> DispatchState:
    """The state a new dispatch starts in: assigned, in the grab pool, or summoned by a whistle."""
    if grab and summoned:
        raise ValueError("a dispatch is either offered to grab or summoned, not both")
    if grab:
        return DispatchState(Status.PENDING_GRAB)
    if summoned:
        return DispatchState(Status.SUMMONED)
    return DispatchState(Status.ASSIGNED)


def allowed_actions(status: Status) -> list[Action]:
    """The actions the status allows, in declaration order."""
    return [action for action, rule in _RULES.items() if status in rule.sources]


def can_apply(state: DispatchState, action: Action) -> bool:
    """True when ``apply`` would accept the action."""
    return state.status in _RULES[action].sources


def apply(state: DispatchState, action: Action) -> DispatchState:
    """The state after ``action``; IllegalTransition when the current status forbids it."""
    rule = _RULES[action]
    if state.status not in rule.sources:
        raise IllegalTransition(state.status, action)
    status = state.status
    match action:
        case Action.RETURN_REQUEST | Action.EXTENSION_REQUEST:
            return replace(state, status=rule.target or status, resume=status)
        case Action.RETURN_DENY | Action.EXTENSION_DENY:
            return replace(state, status=state.resume or Status.SIGNED, resume=None)
        case Action.EXTENSION_APPROVE:
            return replace(
                state,
                status=state.resume or Status.SIGNED,
                resume=None,
                extensions_granted=state.extensions_granted + 1,
            )
        case Action.PROGRESS:
            # A progress note never undoes a milestone: after contact it stays "contacted".
            after = Status.IN_PROGRESS if status is Status.SIGNED else status
            return replace(state, status=after)
        case Action.ASSIGN:
            return replace(state, status=Status.ASSIGNED, supervised=True)
        case Action.SUPERVISE:
            return replace(state, supervised=True, supervision_count=state.supervision_count + 1)
        case Action.FOCUS:
            return replace(state, focused=True)
        case Action.ESCALATE:
            return replace(state, escalation_level=state.escalation_level + 1)
        case Action.WHISTLE:
            return replace(state, whistles=state.whistles + 1)
    return replace(state, status=rule.target or status, resume=None)


def escalation_path(department_code: str, org: OrgChart) -> list[Department]:
    """The centres overdue work escalates to, nearest first (village → town → district → city)."""
    return org.centres_over(department_code)


def escalation_target(department_code: str, level: int, org: OrgChart) -> Department | None:
    """The centre at escalation ``level`` (1 = the first step up); None past the city."""
    if level < 1:
        raise ValueError(f"escalation levels start at 1, got {level}")
    path = escalation_path(department_code, org)
    return path[level - 1] if level <= len(path) else None
