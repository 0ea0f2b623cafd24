"""The one base of the errors a service operation reports to its caller.

Domain code raises these without knowing HTTP; each app declares one table from error kind to
status (``ServiceSpec.errors``, on top of ``DEFAULT_STATUS``) and ``shared.runtime`` answers every
one of them the same way: the status from the table (the nearest class in the error's MRO wins)
and the body from ``body()``, whose ``detail`` names the problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class DomainError(Exception):
    """Base of the errors an operation reports to its caller; ``body()`` is the answer's JSON."""

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer: ``detail`` names the problem; subclasses add fields."""
        return {"detail": str(self)}

    def headers(self) -> dict[str, str]:
        """Headers the answer carries (``Retry-After``, ``Accept-Post``, …); none by default."""
        return {}


class NotFound(DomainError):
    """No such thing, or not one the caller may know of."""


class Forbidden(DomainError):
    """The caller may not see or do this."""


class Conflict(DomainError):
    """The request clashes with the current state; ``current`` names that state when known."""

    def __init__(self, message: str, *, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.current is not None:
            body["current_status"] = self.current
        return body


class Invalid(DomainError):
    """Well-formed but wrong: refers to what does not exist or breaks a rule; ``field`` names
    the culprit when there is one, ``problems`` lists every reason when there are several."""

    def __init__(
        self, message: str, *, field: str | None = None, problems: Sequence[Any] = ()
    ) -> None:
        super().__init__(message)
        self.field = field
        self.problems = list(problems)

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.field is not None:
            body["field"] = self.field
        if self.problems:
            body["problems"] = [describe_problem(p) for p in self.problems]
        return body


DEFAULT_STATUS: Mapping[type[Exception], int] = {
    DomainError: 400,
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    Invalid: 422,
}


def status_for(exc: Exception, table: Mapping[type[Exception], int]) -> int:
    """The status of the nearest class of ``exc`` that the table names (400 if none does)."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return 400


def describe_problem(problem: Any) -> dict[str, Any]:
    """A JSON-ready problem: its entry, field and message where it has them."""
    return {
        "entry": getattr(problem, "entry", None),
        "field": getattr(problem, "field", None),
        "message": getattr(problem, "message", str(problem)),
    }
