"""Helpers for mediation's integration tests (the ``env`` fixture is in conftest.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from services.mediation.app import create_app
from services.mediation.settings import MediationSettings
from shared.bus import create_topics
from shared.settings import BusSettings
from tests.support import Database, bus_settings, lifespan, make_settings


@contextlib.asynccontextmanager
async def running(
    database: Database, bootstrap: str, **extra: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """Migrate and start mediation; yield its app and an in-process client."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    await create_topics(BusSettings(**bus_settings(bootstrap, prefix)))
    settings = await make_settings(
        MediationSettings,
        service="mediation",
        database=database,
        bootstrap=bootstrap,
        prefix=prefix,
        **extra,
    )
    app = create_app(settings)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client,
    ):
        yield app, client
