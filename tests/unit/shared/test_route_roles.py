"""Every route of every service declares the roles it admits, where a reviewer can see them.

The declaration is ``require_roles(...)`` (its roles become the scopes of the route's
``fengqiao`` security requirement in the OpenAPI document), ``openapi_extra=checks_roles(...)``
for a route that checks the same roles itself, or, for a route anyone may call,
``openapi_extra=public("why")``. Exempt, because a caller without an identity must reach them:
liveness, readiness and metrics (``EXEMPT``); the documentation pages are not in the OpenAPI
document at all. A route using ``CurrentPrincipal`` alone is authenticated but admits every
role: it does not count as a declaration.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from fastapi import Depends, FastAPI

from fengqiao.registry import SERVICES
from shared.auth import (
    PUBLIC_EXTENSION,
    SCHEME_NAME,
    CurrentPrincipal,
    Role,
    public,
    require_roles,
)

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})

ROLE_NAMES = frozenset(r.value for r in Role)


def _operations() -> list[tuple[str, str, str, dict[str, Any]]]:
    found = []
    for name, entry in SERVICES.items():
        module, _, factory = entry.app.partition(":")
        app = getattr(importlib.import_module(module), factory)()
        for path, item in app.openapi()["paths"].items():
            for method, operation in item.items():
                found.append((name, method.upper(), path, operation))
    return found


OPERATIONS = _operations()


def declared_roles(operation: dict[str, Any]) -> set[str] | None:
    """The roles a route admits, "public" for a declared public route, None when undeclared."""
    if operation.get(PUBLIC_EXTENSION):
        return {"public"}
    roles: set[str] = set()
    for requirement in operation.get("security", []):
        roles.update(requirement.get(SCHEME_NAME, []))
    return roles or None


def test_every_service_is_walked() -> None:
    assert {name for name, *_ in OPERATIONS} == set(SERVICES)
    assert len(OPERATIONS) > 4 * len(EXEMPT)


@pytest.mark.parametrize(
    ("service", "method", "path", "operation"),
    [o for o in OPERATIONS if o[2] not in EXEMPT],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_route_declares_its_roles(
    service: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    roles = declared_roles(operation)
    assert roles is not None, (
        f"{service} {method} {path} declares no roles: add Depends(require_roles(...)), or "
        f'openapi_extra=public("why") for a route anyone may call'
    )
    assert roles <= ROLE_NAMES | {"public"}, f"{service} {method} {path}: unknown roles {roles}"


def test_the_walk_tells_declared_from_undeclared_routes() -> None:
    app = FastAPI()

    @app.get("/forgot")
    async def forgot(principal: CurrentPrincipal) -> None:
        """Authenticated, but admits every role: not a declaration."""

    @app.get("/metrics-view", dependencies=[Depends(require_roles(Role.COMMITTEE))])
    async def committee() -> None:
        """Declared."""

    @app.get("/reference", openapi_extra=public("published reference data"))
    async def reference() -> None:
        """Declared public."""

    paths = app.openapi()["paths"]
    assert declared_roles(paths["/forgot"]["get"]) is None
    assert declared_roles(paths["/metrics-view"]["get"]) == {"committee", "operator"}
    assert declared_roles(paths["/reference"]["get"]) == {"public"}
