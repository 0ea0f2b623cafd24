"""Helpers for mediation's integration tests (the ``env`` fixture is in conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from services.mediation.app import create_app
from services.mediation.settings import MediationSettings
from tests.support import (
    Database,
    isolated_settings,
    lifespan,
)


@contextlib.asynccontextmanager
async def running(
    database: Database, bootstrap: str, **extra: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """Migrate and start mediation; yield its app and an in-process client."""
    settings = await isolated_settings(
        MediationSettings, service="mediation", database=database, bootstrap=bootstrap, **extra
    )
    app = create_app(settings)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client,
    ):
        yield app, client
