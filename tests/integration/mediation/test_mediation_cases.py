"""Mediation's case list: who may read it, and that it comes a page at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.mediation.models import Case
from tests.integration.mediation.support import running
from tests.support import Database, as_role

MEDIATOR = as_role("mediator", subject="mediator-07")
CITY_CENTRE = as_role("centre")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (MEDIATOR, 200),
        (as_role("centre"), 200),
        (as_role("centre", unit="TOWN-ZZ-330602001"), 200),
        (as_role("operator"), 200),
        (as_role("hotline"), 403),
        (as_role("department", unit="DIST-ZF-330602"), 403),
        (as_role("grid_worker", unit="GRID-WG-1"), 403),
        (as_role("committee"), 403),
        ({}, 401),  # token mode: no token, no cases
        ({"x-fengqiao-role": "operator"}, 401),  # unsigned headers prove nothing
    ],
)
async def test_mediators_centres_and_operators_read_the_cases(
    env: tuple[Any, httpx.AsyncClient], headers: dict[str, str], status: int
) -> None:
    _, client = env
    response = await client.get("/cases", headers=headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert "mediator" in response.json()["detail"]


async def test_cases_come_newest_first_a_page_at_a_time(
    env: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = env
    start = datetime(2099, 1, 1, tzinfo=UTC)  # newer than any case another test may open
    async with app.state.runtime.sessions() as session, session.begin():
        session.add_all(
            Case(
                case_id=f"M-PAGE-{n:03d}",
                ticket_id=f"PAGE-{n:03d}",
                category_code="0301",
                opened_at=start + timedelta(minutes=n),
            )
            for n in range(205)
        )
    newest_first = [f"M-PAGE-{n:03d}" for n in reversed(range(205))]

    async def page(**params: int) -> list[str]:
        response = await client.get("/cases", params=params, headers=CITY_CENTRE)
        assert response.status_code == 200, response.text
        return [c["case_id"] for c in response.json()]

    assert await page() == newest_first[:50]  # the default page
    assert await page(limit=200) == newest_first[:200]
    assert (await page(limit=200, offset=200))[:5] == newest_first[200:]
    assert await page(limit=10, offset=60) == newest_first[60:70]
    too_many = await client.get("/cases", params={"limit": 201}, headers=CITY_CENTRE)
    assert too_many.status_code == 422 and "limit" in too_many.text


async def test_the_embedded_default_serves_the_cases_to_an_anonymous_caller(
    broker: Any, sqlite_db: Database
) -> None:
    async with running(sqlite_db, broker.bootstrap) as (app, client):
        assert app.state.runtime.settings.auth_mode == "open"
        response = await client.get("/cases")
    assert response.status_code == 200, response.text
    assert response.json() == []
