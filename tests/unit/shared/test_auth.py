"""The auth hook: roles from trusted headers, refusals that say what is wrong."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import CurrentPrincipal, Principal, Role, require_roles


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
        return {"role": principal.role.value, "department": principal.department_code}

    @app.get("/metrics-ish")
    async def committee_only(
        principal: Annotated[Principal, Depends(require_roles(Role.COMMITTEE))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


async def get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.get(path, headers={k.replace("_", "-"): v for k, v in headers.items()})


async def test_open_mode_treats_anonymous_callers_as_operators() -> None:
    response = await get(make_app("open"), "/me")
    assert response.json() == {"role": "operator", "department": None}


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
    assert response.json() == {"role": "department", "department": "city-housing"}


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        ({"x_fengqiao_role": "mayor"}, 401, "unknown role 'mayor'"),
        ({"x_fengqiao_role": "department"}, 401, "X-Fengqiao-Department"),
        ({"x_fengqiao_role": "hotline"}, 403, "role hotline may not"),
        ({"x_fengqiao_role": "committee", "x_fengqiao_subject": "c1"}, 200, "c1"),
    ],
)
async def test_role_requirements(headers: dict[str, str], status: int, needle: str) -> None:
    response = await get(make_app("header"), "/metrics-ish", **headers)
    assert response.status_code == status
    assert needle in response.text
