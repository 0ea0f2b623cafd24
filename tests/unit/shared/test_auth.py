"""The auth hook: roles from trusted headers, refusals that say what is wrong."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import (
    AUDIT_ACTOR_LENGTH,
    MAX_DEPARTMENT_LENGTH,
    MAX_SUBJECT_LENGTH,
    CurrentPrincipal,
    Principal,
    Role,
    require_roles,
)


class _Settings:
    def __init__(self, mode: str) -> None:
        self.auth_mode = mode


class _Runtime:
    def __init__(self, mode: str) -> None:
        self.settings = _Settings(mode)


def make_app(mode: str) -> FastAPI:
    app = FastAPI()
    app.state.runtime = _Runtime(mode)

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str | None]:
        return {
            "role": principal.role.value,
            "subject": principal.subject,
            "department": principal.department_code,
        }

    @app.get("/metrics-ish")
    async def committee_only(
        principal: Annotated[Principal, Depends(require_roles(Role.COMMITTEE))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


async def get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        # latin-1, as servers decode header bytes: lets a test send any byte, controls included
        raw = {k.replace("_", "-"): v.encode("latin-1") for k, v in headers.items()}
        return await c.get(path, headers=raw)


async def test_open_mode_treats_anonymous_callers_as_operators() -> None:
    response = await get(make_app("open"), "/me")
    assert response.json() == {"role": "operator", "subject": "anonymous", "department": None}


async def test_header_mode_refuses_a_request_without_role() -> None:
    response = await get(make_app("header"), "/me")
    assert response.status_code == 401
    assert "X-Fengqiao-Role" in response.json()["detail"]


async def test_department_role_carries_its_department() -> None:
    response = await get(
        make_app("header"),
        "/me",
        x_fengqiao_role="department",
        x_fengqiao_department="city-housing",
    )
    assert response.json() == {
        "role": "department",
        "subject": "anonymous",
        "department": "city-housing",
    }


@pytest.mark.parametrize("mode", ["open", "header"])
@pytest.mark.parametrize("role", ["department", "grid_worker"])
async def test_unit_roles_are_refused_without_their_unit(mode: str, role: str) -> None:
    # Without a unit code dispatch's inbox and grab pool would apply no department filter.
    response = await get(make_app(mode), "/me", x_fengqiao_role=role)
    assert response.status_code == 401
    assert response.json()["detail"] == f"role {role} needs an X-Fengqiao-Department header"


async def test_grid_worker_carries_its_grid_unit() -> None:
    response = await get(
        make_app("header"),
        "/me",
        x_fengqiao_role="grid_worker",
        x_fengqiao_subject="gw-0042",
        x_fengqiao_department="GRID-WG-339921001001001",
    )
    assert response.json() == {
        "role": "grid_worker",
        "subject": "gw-0042",
        "department": "GRID-WG-339921001001001",
    }


def test_the_longest_actor_fits_the_audit_columns() -> None:
    # dispatch writes ``role:subject@department`` into VARCHAR(128) columns
    longest_role = max(len(r.value) for r in Role)
    assert longest_role + 1 + MAX_SUBJECT_LENGTH + 1 + MAX_DEPARTMENT_LENGTH <= AUDIT_ACTOR_LENGTH


@pytest.mark.parametrize("mode", ["open", "header"])
async def test_a_subject_at_the_limit_is_accepted(mode: str) -> None:
    subject = "u" * MAX_SUBJECT_LENGTH
    response = await get(
        make_app(mode),
        "/me",
        x_fengqiao_role="grid_worker",
        x_fengqiao_subject=subject,
        x_fengqiao_department="G" * MAX_DEPARTMENT_LENGTH,
    )
    assert response.status_code == 200
    assert response.json()["subject"] == subject


@pytest.mark.parametrize("mode", ["open", "header"])
@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({"x_fengqiao_subject": "u" * (MAX_SUBJECT_LENGTH + 1)}, "X-Fengqiao-Subject is 49"),
        ({"x_fengqiao_subject": "u" * 10_000}, "X-Fengqiao-Subject is 10000"),
        ({"x_fengqiao_subject": "clerk\x01admin"}, "X-Fengqiao-Subject may hold printable"),
        ({"x_fengqiao_subject": "clerk\tadmin"}, "X-Fengqiao-Subject may hold printable"),
        ({"x_fengqiao_subject": "clerk\x7f"}, "X-Fengqiao-Subject may hold printable"),
        ({"x_fengqiao_subject": "clerk\x85"}, "X-Fengqiao-Subject may hold printable"),
        # UTF-8 sent raw arrives as latin-1 mojibake; refused rather than stored garbled
        (
            {"x_fengqiao_subject": "张三".encode().decode("latin-1")},
            "X-Fengqiao-Subject may hold printable",
        ),
        (
            {"x_fengqiao_department": "D" * (MAX_DEPARTMENT_LENGTH + 1)},
            "X-Fengqiao-Department is 65",
        ),
        ({"x_fengqiao_department": "DEPT\x1b[2J"}, "X-Fengqiao-Department may hold printable"),
    ],
)
async def test_malformed_identity_headers_are_refused_naming_the_header(
    mode: str, headers: dict[str, str], needle: str
) -> None:
    for role in ({}, {"x_fengqiao_role": "department"}):
        all_headers = {"x_fengqiao_department": "city-housing", **role, **headers}
        if not role and mode == "header":
            continue  # no role in header mode: 401 for the missing role comes first
        response = await get(make_app(mode), "/me", **all_headers)
        assert response.status_code == 400, response.text
        assert needle in response.json()["detail"]


async def test_a_missing_role_is_reported_before_a_malformed_subject() -> None:
    response = await get(make_app("header"), "/me", x_fengqiao_subject="u" * 500)
    assert response.status_code == 401
    assert "X-Fengqiao-Role" in response.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        ({"x_fengqiao_role": "mayor"}, 401, "unknown role 'mayor'"),
        ({"x_fengqiao_role": "department"}, 401, "X-Fengqiao-Department"),
        ({"x_fengqiao_role": "grid_worker"}, 401, "X-Fengqiao-Department"),
        ({"x_fengqiao_role": "hotline"}, 403, "role hotline may not"),
        ({"x_fengqiao_role": "committee", "x_fengqiao_subject": "c1"}, 200, "c1"),
    ],
)
async def test_role_requirements(headers: dict[str, str], status: int, needle: str) -> None:
    response = await get(make_app("header"), "/metrics-ish", **headers)
    assert response.status_code == status
    assert needle in response.text
