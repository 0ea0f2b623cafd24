"""Mediation against the real broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.mediation.support import running
from tests.support import open_database


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def env(
    request: pytest.FixtureRequest, broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """One mediation app per test module and database, verifying bearer tokens (token mode)."""
    database = await open_database(request.param, lambda: tmp_path_factory.mktemp("mediation"))
    try:
        async with running(database, broker.bootstrap, auth_mode="token") as app_and_client:
            yield app_and_client
    finally:
        await database.drop()
