"""Domain errors of dispatch; ``api.py`` maps each to its HTTP status.

``workflow.IllegalTransition`` (409, naming the current status) is raised by the state machine
itself and mapped alongside these.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.datafiles import Problem


class DispatchError(Exception):
    """Base of the errors an operation reports to its caller."""

    status_code = 400


class NotFound(DispatchError):
    """No such dispatch, ticket, whistle or department (404)."""

    status_code = 404


class Forbidden(DispatchError):
    """The caller may not see or do this: another department's dispatch, a centre action
    taken by a department, a centre outside its jurisdiction (403)."""

    status_code = 403


class Conflict(DispatchError):
    """The request clashes with the current state in a way the state machine does not name:
    a duplicate code, open dispatches in the way (409)."""

    status_code = 409


class Invalid(DispatchError):
    """The request is well-formed but refers to what does not exist or would break the
    organisation or its rules (422); ``problems`` lists every reason."""

    status_code = 422

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)
