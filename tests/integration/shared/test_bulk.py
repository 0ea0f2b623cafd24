"""``bulk.add_sparse``: counters added to stored rows, new rows inserted whole, on SQLite and
PostgreSQL alike."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, select

from shared import bulk
from shared.db import create_engine, ensure_schema
from shared.settings import ServiceSettings
from tests.support import Database

ADD, BLANK = ("a", "b", "c"), ("area",)
metadata = MetaData()
# A key, two other columns (``area`` may be left out: ""), three counters.
columns = [Column(n, String(8), nullable=False, primary_key=n == "key") for n in ("key", "kind")]
columns += [Column("area", String(8), nullable=False)]
columns += [Column(n, BigInteger, nullable=False, server_default="0") for n in ADD]
counts = Table("sparse_counts", metadata, *columns)


@pytest.fixture
async def engine(database: Database):
    settings = ServiceSettings(**database.settings_for("sparse"))
    await ensure_schema(settings)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def _stored(engine: Any) -> dict[str, tuple[Any, ...]]:
    async with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in await conn.execute(select(counts))}


async def test_changes_go_to_stored_rows_and_new_rows_are_inserted_whole(
    engine: Any, database: Database
) -> None:
    whole = [{"key": "x", "kind": "t", "a": 2}, {"key": "y", "kind": "t", "area": "n", "b": 1}]
    async with engine.begin() as conn:
        emptied = await bulk.add_sparse(conn, counts, whole, key="key", add=ADD, blank=BLANK)
    assert emptied == []
    assert await _stored(engine) == {"x": ("t", "", 2, 0, 0), "y": ("t", "n", 0, 1, 0)}

    # Rows of key and changes alone; the other columns asked of ``names`` (which here would
    # name the stored rows wrongly: they must keep what they hold).
    names = {
        "x": {"key": "x", "kind": "wrong"},
        "y": {"key": "y", "kind": "wrong", "area": "wrong"},
        "z": {"key": "z", "kind": "u", "area": "s"},
    }
    asked: list[str] = []

    def name(key: str) -> dict[str, Any]:
        asked.append(key)
        return names[key]

    changes = [{"key": "x", "a": -2}, {"key": "y", "b": 2, "c": 1}, {"key": "z", "a": 5}]
    async with engine.begin() as conn:
        emptied = await bulk.add_sparse(
            conn, counts, changes, key="key", add=ADD, blank=BLANK, names=name
        )
    assert emptied == ["x"]  # all zeros now: the caller deletes it
    assert await _stored(engine) == {
        "x": ("t", "", 0, 0, 0),
        "y": ("t", "n", 0, 3, 1),
        "z": ("u", "s", 5, 0, 0),
    }
    if database.kind == "postgres":
        assert asked == ["z"]  # a stored row's other columns are not sent

    # Whole rows again, on stored and new keys alike.
    again = [{"key": "z", "kind": "u", "area": "s", "a": -5}, {"key": "w", "kind": "v", "c": 4}]
    async with engine.begin() as conn:
        emptied = await bulk.add_sparse(conn, counts, again, key="key", add=ADD, blank=BLANK)
    assert emptied == ["z"]
    assert (await _stored(engine))["w"] == ("v", "", 0, 0, 4)
