"""The pure state machine of a mediation case, and the ladder of levels it escalates up.

``apply(state, action)`` returns the next state or raises ``IllegalTransition`` naming the
current status (the API answers 409 with it). No I/O: the service loads the state, applies the
action, stores the result and writes the events.

    accepted → in_mediation → agreed ──(court)──→ court_confirmed
                    │            │                      │
                    ↓            └──────────┬───────────┘
                  failed                    ↓
                                   fulfilled / breached ──(reopen)──→ in_mediation
                                                        └─(refer)──→ referred
    any of them → closed (from fulfilled, agreed, court_confirmed, failed, referred, withdrawn)

Escalation ("小事不出村、大事不出镇") does not change what a case is, only where: the case starts
again as ``accepted`` one level up (village → town → district → city).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal, get_args

from shared.errors import DomainError
from shared.events.mediation import Level

LEVELS: tuple[Level, ...] = get_args(Level)


class Status(StrEnum):
    """Where a case stands."""

    ACCEPTED = "accepted"  # 受理: opened, waiting for its first session
    IN_MEDIATION = "in_mediation"  # 调解中
    AGREED = "agreed"  # 达成协议 (written or verbal)
    COURT_CONFIRMED = "court_confirmed"  # 司法确认
    FAILED = "failed"  # 调解不成
    FULFILLED = "fulfilled"  # 履行完毕 (every term honoured, seen on follow-up)
    BREACHED = "breached"  # 未履行 (a term was broken; passes on to reopened or referred)
    REFERRED = "referred"  # 转诉讼 / 仲裁 / 法律援助 / 行政
    WITHDRAWN = "withdrawn"  # 撤回 by the applicant
    CLOSED = "closed"  # 结案


class Action(StrEnum):
    """What can be done to a case."""

    START = "start"  # a session was scheduled or held
    AGREE = "agree"
    FAIL = "fail"
    CONFIRM = "confirm"  # the court granted judicial confirmation
    FULFIL = "fulfil"
    BREACH = "breach"
    REOPEN = "reopen"
    REFER = "refer"
    WITHDRAW = "withdraw"
    ESCALATE = "escalate"
    CLOSE = "close"


MEDIATING = frozenset({Status.ACCEPTED, Status.IN_MEDIATION})
SETTLED = frozenset({Status.AGREED, Status.COURT_CONFIRMED})
# Cases a mediator still works on, and whose parties therefore count for conflicts of interest.
OPEN = frozenset(Status) - {Status.CLOSED, Status.REFERRED, Status.WITHDRAWN, Status.FULFILLED}


@dataclass(frozen=True, slots=True)
class _Rule:
    sources: frozenset[Status]
    target: Status


_RULES: dict[Action, _Rule] = {
    Action.START: _Rule(MEDIATING, Status.IN_MEDIATION),
    # A verbal agreement may be reached on the phone before any session.
    Action.AGREE: _Rule(MEDIATING, Status.AGREED),
    Action.FAIL: _Rule(MEDIATING, Status.FAILED),
    Action.CONFIRM: _Rule(frozenset({Status.AGREED}), Status.COURT_CONFIRMED),
    Action.FULFIL: _Rule(SETTLED, Status.FULFILLED),
    Action.BREACH: _Rule(SETTLED, Status.BREACHED),
    Action.REOPEN: _Rule(frozenset({Status.BREACHED}), Status.IN_MEDIATION),
    Action.REFER: _Rule(MEDIATING | {Status.FAILED, Status.BREACHED}, Status.REFERRED),
    Action.WITHDRAW: _Rule(MEDIATING, Status.WITHDRAWN),
    Action.ESCALATE: _Rule(MEDIATING | {Status.FAILED}, Status.ACCEPTED),
    Action.CLOSE: _Rule(
        SETTLED | {Status.FULFILLED, Status.FAILED, Status.REFERRED, Status.WITHDRAWN},
        Status.CLOSED,
    ),
}

CloseOutcome = Literal["fulfilled", "agreed", "failed", "referred", "withdrawn"]
_OUTCOME: dict[Status, CloseOutcome] = {
    Status.FULFILLED: "fulfilled",
    Status.AGREED: "agreed",
    Status.COURT_CONFIRMED: "agreed",
    Status.FAILED: "failed",
    Status.REFERRED: "referred",
    Status.WITHDRAWN: "withdrawn",
}


@dataclass(frozen=True, slots=True)
class CaseState:
    """A case's status plus what the status alone cannot hold."""

    status: Status
    level: Level = "town"
    breaches: int = 0
    escalations: int = 0
    outcome: CloseOutcome | None = None  # how it closed, set by CLOSE


class IllegalTransition(DomainError):
    """An action the case's current status does not allow (409, naming the status)."""

    def __init__(self, current: Status, action: Action, reason: str | None = None) -> None:
        self.current = current
        self.action = action
        allowed = sorted(s.value for s in _RULES[action].sources)
        super().__init__(
            reason
            or f"cannot {action.value} a case that is {current.value}; "
            f"{action.value} is allowed from: {', '.join(allowed)}"
        )

    def body(self) -> dict[str, Any]:
        return {**super().body(), "current_status": self.current.value, "action": self.action.value}


def as_level(name: str) -> Level:
    """A level name as the ``Level`` type; ValueError for an unknown one."""
    for level in LEVELS:
        if level == name:
            return level
    raise ValueError(f"unknown level {name!r}; one of {', '.join(LEVELS)}")


def next_level(level: Level) -> Level | None:
    """The level above (village → town → district → city); None above the city."""
    index = LEVELS.index(level)
    return LEVELS[index + 1] if index + 1 < len(LEVELS) else None


def allowed_actions(status: Status) -> list[Action]:
    """The actions the status allows, in declaration order."""
    return [action for action, rule in _RULES.items() if status in rule.sources]


def can_apply(state: CaseState, action: Action) -> bool:
    """True when ``apply`` would accept the action."""
    try:
        apply(state, action)
    except IllegalTransition:
        return False
    return True


def apply(state: CaseState, action: Action) -> CaseState:
    """The state after ``action``; IllegalTransition when the current status forbids it."""
    rule = _RULES[action]
    if state.status not in rule.sources:
        raise IllegalTransition(state.status, action)
    match action:
        case Action.ESCALATE:
            above = next_level(state.level)
            if above is None:
                raise IllegalTransition(
                    state.status, action, "cannot escalate a case held at the city level"
                )
            return replace(
                state, status=rule.target, level=above, escalations=state.escalations + 1
            )
        case Action.BREACH:
            return replace(state, status=rule.target, breaches=state.breaches + 1)
        case Action.CLOSE:
            return replace(state, status=rule.target, outcome=_OUTCOME[state.status])
    return replace(state, status=rule.target)
