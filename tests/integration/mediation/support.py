"""Helpers for mediation's integration tests (the ``env`` fixture is in conftest.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import select

from services.mediation.app import create_app
from services.mediation.models import outbox_table
from services.mediation.settings import MediationSettings
from shared.clock import Clock
from tests.support import (
    Database,
    as_role,
    isolated_settings,
    lifespan,
)

CENTRE = as_role("centre")  # the city-wide centre: every level
COMMITTEE = as_role("committee")


def mediator(subject: str) -> dict[str, str]:
    return as_role("mediator", subject=subject)


def centre(unit: str) -> dict[str, str]:
    return as_role("centre", unit=unit)


def official(
    subject: str, role: str = "department", unit: str = "DIST-ZF-339902"
) -> dict[str, str]:
    return as_role(role, subject=subject, unit=unit)


def unique(prefix: str) -> str:
    """An id of this test's own: the app is shared by a module's tests."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running(
    database: Database, bootstrap: str, *, clock: Clock | None = None, **extra: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """Migrate and start mediation; yield its app and an in-process client."""
    settings = await isolated_settings(
        MediationSettings, service="mediation", database=database, bootstrap=bootstrap, **extra
    )
    app = create_app(settings, clock=clock)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client,
    ):
        yield app, client


async def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of a response that must have the given status."""
    assert response.status_code == status, response.text
    return response.json()


async def add_mediator(
    client: httpx.AsyncClient,
    mediator_id: str,
    *,
    level: str = "town",
    specialities: tuple[str, ...] = ("neighbour",),
    kind: str = "full_time",
) -> dict[str, Any]:
    body = {
        "mediator_id": mediator_id,
        "name": f"调解员{mediator_id[-4:]}",
        "kind": kind,
        "level": level,
        "specialities": list(specialities),
        "availability": [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(1, 8)],
    }
    return await ok(await client.post("/mediators", json=body, headers=CENTRE), 201)  # type: ignore[no-any-return]


async def walk_in(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    level: str = "town",
    area_code: str = "339921101",
    dispute_type: str = "neighbour",
    parties: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body = {
        "dispute_type": dispute_type,
        "level": level,
        "area_code": area_code,
        "summary": "邻居装修占用公共走廊",
        "parties": parties
        if parties is not None
        else [
            {"role": "applicant", "name": "张三丰", "phone": "13812345678"},
            {"role": "respondent", "name": "李四", "phone": "13987654321"},
        ],
    }
    return await ok(await client.post("/cases", json=body, headers=headers), 201)  # type: ignore[no-any-return]


async def events_of(app: Any, case_id: str) -> list[str]:
    """The event types mediation wrote for a case, in order."""
    async with app.state.runtime.sessions() as session:
        rows = await session.execute(
            select(outbox_table.c.event_type, outbox_table.c.payload).order_by(outbox_table.c.id)
        )
        return [t for t, payload in rows if f'"{case_id}"'.encode() in payload]
