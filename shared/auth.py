"""Who is calling: the hook every route that needs an identity depends on.

Two modes, chosen by ``<SERVICE>_AUTH_MODE``:

- ``open`` (the embedded default): a caller that names no role acts as ``operator``; a caller
  may still name one with the headers below, which is how tests and demos act as a department.
- ``header``: a trusted gateway in front of the services authenticates users and sets
  ``X-Fengqiao-Role``, ``X-Fengqiao-Subject`` and, for departments and grid workers (and
  centres scoped to a unit), ``X-Fengqiao-Department``; a request without a role is refused
  with 401.

In both modes a department or grid worker without its unit code is refused with 401 (it would
otherwise see every unit's dispatches), and a subject or unit code that is too long or holds
anything but printable ASCII is refused with 400: both end up in audit columns.

Signed tokens replace the trusted headers when the security model is completed; routes do not
change, because they only see a ``Principal``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

# Audit columns hold ``role:subject@department`` in 128 characters (dispatch's ``actor``): the
# longest role, the subject, the department and the two separators must fit.
AUDIT_ACTOR_LENGTH = 128
MAX_SUBJECT_LENGTH = 48
MAX_DEPARTMENT_LENGTH = 64  # dispatch's department codes


class Role(StrEnum):
    HOTLINE = "hotline"  # the 12345 platform and other channels: post tickets and callbacks
    DEPARTMENT = "department"  # acts on its own dispatches only
    GRID_WORKER = "grid_worker"
    CENTRE = "centre"  # the dispatch centre: approves returns and extensions, supervises
    MEDIATOR = "mediator"
    COMMITTEE = "committee"  # reads metrics, writes nothing
    OPERATOR = "operator"  # runs the system


# Roles that act for one unit: without the unit code their queries would not be scoped at all.
UNIT_ROLES = frozenset({Role.DEPARTMENT, Role.GRID_WORKER})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    role: Role
    subject: str
    department_code: str | None = None


def principal_from_request(request: Request, *, mode: str) -> Principal:
    """Build the caller's principal from the request, or raise 401 naming what is missing
    (400 naming the header whose value is malformed)."""
    raw_role = request.headers.get("x-fengqiao-role")
    if raw_role is None and mode != "open":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-Fengqiao-Role header")
    subject = _checked(request, "X-Fengqiao-Subject", MAX_SUBJECT_LENGTH) or "anonymous"
    department = _checked(request, "X-Fengqiao-Department", MAX_DEPARTMENT_LENGTH)
    if raw_role is None:
        return Principal(Role.OPERATOR, subject)
    try:
        role = Role(raw_role)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"unknown role {raw_role[:32]!r}; one of {known}"
        ) from None
    if role in UNIT_ROLES and not department:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"role {role.value} needs an X-Fengqiao-Department header",
        )
    return Principal(role, subject, department)


def _checked(request: Request, header: str, max_length: int) -> str | None:
    """The header's value, or 400 naming the header when it is too long or not printable ASCII
    (no control characters: the value is written to audit rows and logs)."""
    value = request.headers.get(header)
    if value is None:
        return None
    if len(value) > max_length:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{header} is {len(value)} characters long; at most {max_length}",
        )
    if not all(" " <= ch <= "~" for ch in value):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{header} may hold printable ASCII only (no control characters)",
        )
    return value


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, per the service's auth mode."""
    mode = getattr(request.app.state.runtime.settings, "auth_mode", "open")
    return principal_from_request(request, mode=mode)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only the given roles (operators always pass); 403 otherwise."""
    allowed = {*roles, Role.OPERATOR}

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role.value} may not do this; needs {names}",
            )
        return principal

    return check
