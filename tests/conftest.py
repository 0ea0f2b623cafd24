"""Fixtures shared by every test: the embedded broker, and databases on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.broker import EmbeddedBroker
from tests.support import Database, open_database


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (tansu, memory storage) on a free loopback port."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    embedded = EmbeddedBroker(log_path=log).start()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own, so tests sharing the broker never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Each database test runs on SQLite and, where a server answers, on PostgreSQL."""
    db = await open_database(request.param, lambda: tmp_path)
    try:
        yield db
    finally:
        await db.drop()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def module_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    """One database per test module, on SQLite and (where a server answers) PostgreSQL: the
    home of a service app that a whole module of tests shares."""
    db = await open_database(request.param, lambda: tmp_path_factory.mktemp("db"))
    try:
        yield db
    finally:
        await db.drop()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    """SQLite only, for tests whose subject is not the database."""
    return Database("sqlite", str(tmp_path))
