"""Who is calling: the hook every route that needs an identity depends on.

Two modes, chosen by ``<SERVICE>_AUTH_MODE``:

- ``open`` (the embedded default): a caller that names no role acts as ``operator``; a caller
  may still name one with the headers below, which is how tests and demos act as a department.
- ``header``: a trusted gateway in front of the services authenticates users and sets
  ``X-Fengqiao-Role``, ``X-Fengqiao-Subject`` and, for departments, ``X-Fengqiao-Department``;
  a request without a role is refused with 401.

Signed tokens replace the trusted headers when the security model is completed; routes do not
change, because they only see a ``Principal``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status


class Role(StrEnum):
    HOTLINE = "hotline"  # the 12345 platform and other channels: post tickets and callbacks
    DEPARTMENT = "department"  # acts on its own dispatches only
    GRID_WORKER = "grid_worker"
    CENTRE = "centre"  # the dispatch centre: approves returns and extensions, supervises
    MEDIATOR = "mediator"
    COMMITTEE = "committee"  # reads metrics, writes nothing
    OPERATOR = "operator"  # runs the system


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    role: Role
    subject: str
    department_code: str | None = None


def principal_from_request(request: Request, *, mode: str) -> Principal:
    """Build the caller's principal from the request, or raise 401 naming what is missing."""
    raw_role = request.headers.get("x-fengqiao-role")
    subject = request.headers.get("x-fengqiao-subject") or "anonymous"
    department = request.headers.get("x-fengqiao-department")
    if raw_role is None:
        if mode == "open":
            return Principal(Role.OPERATOR, subject)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-Fengqiao-Role header")
    try:
        role = Role(raw_role)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"unknown role {raw_role!r}; one of {known}"
        ) from None
    if role is Role.DEPARTMENT and not department:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "role department needs an X-Fengqiao-Department header"
        )
    return Principal(role, subject, department)


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
