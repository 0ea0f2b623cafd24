"""Dispatch against the real broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import PG_URL
from tests.integration.dispatch.support import DispatchEnv, running
from tests.support import Database, postgres_url


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def env(
    request: pytest.FixtureRequest, broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DispatchEnv]:
    """One dispatch app per test module and database."""
    if request.param == "sqlite":
        database = Database("sqlite", str(tmp_path_factory.mktemp("dispatch")))
    else:
        url, reason = await postgres_url(PG_URL)
        if url is None:
            pytest.skip(reason)
        database = Database("postgres", url)
    try:
        async with running(database, broker.bootstrap) as running_env:
            yield running_env
    finally:
        await database.drop()
