"""Dispatch against the real broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.dispatch.support import DispatchEnv, running
from tests.support import Database


@pytest.fixture(scope="module")
async def env(module_database: Database, broker: Any) -> AsyncIterator[DispatchEnv]:
    """One dispatch app per test module and database."""
    async with running(module_database, broker.bootstrap) as running_env:
        yield running_env
