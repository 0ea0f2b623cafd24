"""Evaluation against the real broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.evaluation.support import EvaluationEnv, running
from tests.support import Database


@pytest.fixture(scope="module")
async def env(module_database: Database, broker: Any) -> AsyncIterator[EvaluationEnv]:
    """One evaluation app per test module and database, verifying bearer tokens (token mode)."""
    async with running(module_database, broker.bootstrap, auth_mode="token") as running_env:
        yield running_env
