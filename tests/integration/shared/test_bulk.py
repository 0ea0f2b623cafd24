"""``bulk.add_sparse``: counters added to stored rows, new rows inserted whole, on SQLite and
PostgreSQL alike; ``bulk.upsert`` stores what a Core insert stores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    MetaData,
    String,
    Table,
    Text,
    select,
)

from shared import bulk
from shared.db import AwareDateTime, create_engine, ensure_schema
from shared.settings import ServiceSettings
from tests.support import Database

ADD, BLANK = ("a", "b", "c"), ("area",)
metadata = MetaData()
# A key, two other columns (``area`` may be left out: ""), three counters.
columns = [Column(n, String(8), nullable=False, primary_key=n == "key") for n in ("key", "kind")]
columns += [Column("area", String(8), nullable=False)]
columns += [Column(n, BigInteger, nullable=False, server_default="0") for n in ADD]
counts = Table("sparse_counts", metadata, *columns)
typed = Table(
    "bulk_typed",
    metadata,
    Column("id", String(8), primary_key=True),
    Column("at", AwareDateTime(), nullable=False),
    Column("maybe_at", AwareDateTime(), nullable=True),
    Column("day", Date, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("doc", JSON, nullable=True),
    Column("bare", JSON(none_as_null=True), nullable=True),  # None is SQL NULL
    Column("note", Text, nullable=True),
    Column("ratio", Float, nullable=True),
    Column("big", BigInteger, nullable=True),
)
typed_core = typed.to_metadata(metadata, name="bulk_typed_core")
SHANGHAI = timezone(timedelta(hours=8))


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


def _typed_row(i: int) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "at": datetime(2026, 3, 1, 20, 30, i, 123456 * (i % 2), tzinfo=SHANGHAI),
        "maybe_at": None if i % 2 else datetime(2026, 3, 2, tzinfo=UTC),
        "day": None if i % 3 else date(2026, 2, 28 - i),
        "flag": bool(i % 2),
        "doc": None if i % 3 == 1 else {"cells": [["2026-03-01", ["", "路灯"], {"n": i}]]},
        "bare": None if i % 3 == 2 else [i, "路灯"],
        "note": None if i % 2 else "路灯不亮 'quoted'",
        "ratio": None if i % 2 else 0.1 + i,
        "big": 2**40 + i,
    }


async def _as_stored(engine: Any, table: Table, database: Database) -> list[tuple[Any, ...]]:
    """Each value as the database holds it: its text (and on SQLite its storage class), not
    as SQLAlchemy reads it back (a datetime stored in another format reads back alike, but
    compares differently in SQL)."""
    names = [c.name for c in table.columns]
    if database.kind == "sqlite":
        shown = [f"typeof(\"{n}\") || ':' || coalesce(CAST(\"{n}\" AS TEXT), '')" for n in names]
    else:
        shown = [f'CAST("{n}" AS TEXT)' for n in names]
    sql = f"SELECT {', '.join(shown)} FROM {table.name} ORDER BY id"
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.exec_driver_sql(sql)]


@pytest.mark.parametrize("document", [False, True], ids=["arrays", "document"])
async def test_upserts_store_exactly_what_a_core_insert_stores(
    engine: Any, database: Database, document: bool
) -> None:
    """Every path (SQLite's executemany on the driver; PostgreSQL's arrays, or one JSON
    document) stores what Core stores — a None JSON value as JSON ``null``, or as SQL NULL
    where the column's type says ``none_as_null``."""
    rows = [_typed_row(i) for i in range(6)]
    replace = bulk.OnConflict.REPLACE
    async with engine.begin() as conn:
        await bulk.upsert(conn, typed, rows[:3], key=["id"], on_conflict=replace, document=document)
        # Replacing stored rows and inserting new ones in one statement.
        await bulk.upsert(conn, typed, rows, key=["id"], on_conflict=replace, document=document)
        await conn.execute(typed_core.insert(), rows)
    assert await _as_stored(engine, typed, database) == await _as_stored(
        engine, typed_core, database
    )
    async with engine.connect() as conn:
        stored = [dict(r._mapping) for r in await conn.execute(select(typed).order_by(typed.c.id))]
        nulls = select(typed.c.id).where(typed.c.doc.is_(None) | typed.c.bare.is_(None))
        sql_null = {r[0] for r in await conn.execute(nulls.order_by(typed.c.id))}
    assert stored[0]["at"] == datetime(2026, 3, 1, 12, 30, 0, tzinfo=UTC)
    assert stored[1]["doc"] is None and stored[0]["doc"]["cells"][0][1] == ["", "路灯"]
    assert stored[2]["bare"] is None and stored[1]["bare"] == [1, "路灯"]
    # what a reader in SQL sees: ``doc``'s None is JSON null (not NULL), ``bare``'s is NULL
    assert sql_null == {"r2", "r5"}


async def test_an_insert_returning_answers_the_new_keys_once(engine: Any) -> None:
    rows = [{"key": k, "kind": "t", "area": "", "a": 1, "b": 0, "c": 0} for k in "xyx"]
    async with engine.begin() as conn:
        new = await bulk.upsert(
            conn, counts, rows, key=["key"], on_conflict=bulk.OnConflict.NOTHING, returning="key"
        )
        assert sorted(new) == ["x", "y"]
        again = [*rows, {"key": "z", "kind": "t", "area": "", "a": 1, "b": 0, "c": 0}]
        new = await bulk.upsert(
            conn, counts, again, key=["key"], on_conflict=bulk.OnConflict.NOTHING, returning="key"
        )
    assert new == ["z"]
    assert sorted(await _stored(engine)) == ["x", "y", "z"]


plain = Table(  # ``typed`` without its JSON columns: what a positional document can carry
    "bulk_plain",
    metadata,
    *(
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in typed.columns
        if not isinstance(c.type, JSON)
    ),
)
plain_core = plain.to_metadata(metadata, name="bulk_plain_core")


async def test_a_positional_document_stores_exactly_what_a_core_insert_stores(
    engine: Any, database: Database
) -> None:
    """Rows sent as arrays of their values (``positional``), read by position, store what Core
    stores: aware datetimes in any zone, dates, booleans, text with quotes and CJK, floats,
    big integers and NULLs — through ``upsert`` and through ``ready_upsert``/``write_ready``
    (the path evaluation's facts take), inserting and replacing in one statement."""
    rows = [{k: v for k, v in _typed_row(i).items() if k in plain.c} for i in range(6)]
    rows[1]["note"] = 'a "quoted" \\ back\\slash,\n{brace} (paren) 路灯'
    replace = bulk.OnConflict.REPLACE
    async with engine.begin() as conn:
        await bulk.upsert(
            conn, plain, rows[:2], key=["id"], on_conflict=replace, document=True, positional=True
        )
        ready = bulk.ready_upsert(conn, plain, rows[1:4], key=["id"], on_conflict=replace)
        positional = bulk.ready_upsert(
            conn, plain, rows, key=["id"], on_conflict=replace, positional=True
        )
        await bulk.write_ready(conn, [ready])
        await bulk.write_ready(conn, [positional])
        await conn.execute(plain_core.insert(), rows)
    stored = await _as_stored(engine, plain, database)
    assert stored == await _as_stored(engine, plain_core, database)
    assert len(stored) == 6
    if database.kind == "postgres":
        assert positional.document is not None
        assert positional.document.startswith('[["r0",')  # arrays of values, no column names


async def test_a_positional_document_refuses_json_columns(engine: Any, database: Database) -> None:
    if database.kind != "postgres":
        pytest.skip("the document is PostgreSQL's")
    rows = [_typed_row(0)]
    async with engine.begin() as conn:
        with pytest.raises(ValueError, match="JSON columns"):
            await bulk.upsert(
                conn,
                typed,
                rows,
                key=["id"],
                on_conflict=bulk.OnConflict.REPLACE,
                document=True,
                positional=True,
            )
