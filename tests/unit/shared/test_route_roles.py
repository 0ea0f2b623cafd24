"""Every route of every service declares the roles it admits, where a reviewer can see them.

The declaration is ``require_roles(...)`` (its roles become the scopes of the route's
``fengqiao`` security requirement in the OpenAPI document) or, for a route anyone may call,
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

# Routes that do not declare their roles yet: each line is a defect owned by its service (the
# role check is inside the route body, or in the domain only). Remove a line when the route
# declares its roles; the test fails on a line that is no longer needed, so this only shrinks.
PENDING: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("intake", "POST", "/tickets"),
        ("intake", "GET", "/tickets"),
        ("intake", "GET", "/tickets/{ticket_id}"),
        ("intake", "GET", "/tickets/{ticket_id}/attachments/{sha256}"),
        ("intake", "POST", "/tickets/{ticket_id}/callbacks"),
        ("intake", "GET", "/channels"),
        ("intake", "GET", "/channels/{code}"),
        ("intake", "POST", "/channels/{code}/tickets"),
        ("intake", "POST", "/channels/{code}/callbacks"),
        ("intake", "GET", "/open311/discovery.{fmt}"),
        ("intake", "GET", "/open311/v2/services.{fmt}"),
        ("intake", "GET", "/open311/v2/services/{service_code}.{fmt}"),
        ("intake", "POST", "/open311/v2/requests.{fmt}"),
        ("intake", "GET", "/open311/v2/requests.{fmt}"),
        ("intake", "GET", "/open311/v2/requests/{service_request_id}.{fmt}"),
        ("dispatch", "GET", "/organisation"),
        ("dispatch", "GET", "/areas"),
        ("dispatch", "GET", "/departments"),
        ("dispatch", "GET", "/departments/{code}"),
        ("dispatch", "GET", "/departments/{code}/history"),
        ("dispatch", "GET", "/routing/rules"),
        ("dispatch", "POST", "/routing/dry-run"),
        ("dispatch", "GET", "/profiles"),
        ("dispatch", "GET", "/calendar"),
        ("dispatch", "GET", "/inbox"),
        ("dispatch", "GET", "/grab-pool"),
        ("dispatch", "GET", "/dispatches/{dispatch_id}"),
        ("dispatch", "GET", "/tickets/{ticket_id}/dispatches"),
        ("dispatch", "GET", "/escalations"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/sign-for"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/grab"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/return"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/return/approve"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/return/deny"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/transfer"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/extension"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/extension/approve"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/extension/deny"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/progress"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/contact"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/complete"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/supervise"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/focus"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/withdraw"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/mediation"),
        ("dispatch", "POST", "/dispatches/{dispatch_id}/report"),
        ("dispatch", "POST", "/tickets/{ticket_id}/whistle"),
        ("dispatch", "GET", "/whistles/{whistle_id}"),
        ("dispatch", "GET", "/tickets/{ticket_id}/whistles"),
    }
)

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
    [o for o in OPERATIONS if o[2] not in EXEMPT and o[:3] not in PENDING],
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


def test_pending_routes_still_exist_and_still_declare_nothing() -> None:
    current = {o[:3]: o[3] for o in OPERATIONS}
    gone = sorted(p for p in PENDING if p not in current)
    fixed = sorted(p for p in PENDING if p in current and declared_roles(current[p]) is not None)
    assert not gone, f"remove from PENDING, these routes no longer exist: {gone}"
    assert not fixed, f"remove from PENDING, these routes declare their roles now: {fixed}"


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
