"""Mediation against the real broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.mediation.support import running
from tests.support import Database


@pytest.fixture(scope="module")
async def env(
    module_database: Database, broker: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """One mediation app per test module and database, verifying bearer tokens (token mode)."""
    async with running(module_database, broker.bootstrap, auth_mode="token") as app_and_client:
        yield app_and_client
