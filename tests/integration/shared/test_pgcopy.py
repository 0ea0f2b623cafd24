"""The binary COPY stream written a column at a time (``shared.pgcopy``) stores what asyncpg's
own ``copy_records_to_table`` stores, value by value; what it does not write goes to asyncpg."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Numeric, Table, select

from shared import pgcopy
from shared.groupcommit import GroupCommitter
from tests.integration.shared.test_group_commit import _engine_with, _read, _rich_row, rich
from tests.support import Database

# (column, PostgreSQL type) of the compared tables, after ``id int4``.
COLUMNS = [
    ("t", "text"),
    ("v", "varchar(40)"),
    ("c", "char(3)"),
    ("j", "json"),
    ("jb", "jsonb"),
    ("b", "bytea"),
    ("i2", "int2"),
    ("i4", "int4"),
    ("i8", "int8"),
    ("f4", "float4"),
    ("f8", "float8"),
    ("flag", "bool"),
    ("at", "timestamptz"),
]
_ZONES = [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-3, minutes=-30))]
_Tag = type("_Tag", (str,), {})  # a str subclass: asyncpg writes it as a str
_TEXTS = [
    _Tag("标签"),
    "",
    "路灯不亮 \u2028 'q' \"d\" \\ \t\n\r",
    "😀𠀋",
    "a" * 40,
    "NULL",
    "\\N",
    "é\u0301",
]
_TIMES = [
    datetime(2026, 3, 1, 20, 30, 15, 123456, tzinfo=_ZONES[1]),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 2, tzinfo=UTC),
    datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=_ZONES[2]),
    datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=_ZONES[2]),
]
_CHARACTERS = [*range(1, 0xD800), *range(0xE000, 0x2FFFF)]  # no NUL, no surrogate
_FLOATS = [0.0, -0.0, 0.1, -1e308, 5e-324, math.inf, -math.inf, math.nan, 1 / 3, 3.4e38]


def _value(kind: str, rng: random.Random, n: int) -> Any:
    """One value of a column of ``kind``: an edge case or a random one, now and then None."""
    if rng.random() < 0.15:
        return None
    if kind in ("text", "varchar(40)"):
        return rng.choice([*_TEXTS, "".join(map(chr, rng.sample(_CHARACTERS, 9)))])
    if kind == "char(3)":
        return rng.choice(["", "a", "区b", "abc"])
    if kind in ("json", "jsonb"):
        return rng.choice(['{"a": [1, "二", null]}', "[]", '"\\u00e9x"', "1.5e3", '{"b":{}}'])
    if kind == "bytea":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    if kind in ("int2", "int4", "int8"):
        bits = {"int2": 15, "int4": 31, "int8": 63}[kind]
        return rng.choice([-(2**bits), 2**bits - 1, 0, -1, rng.randrange(-(2**bits), 2**bits)])
    if kind == "float4":
        return rng.choice([0.0, -0.0, 0.1, 1.5, -2.25e10, math.inf, math.nan, rng.random()])
    if kind == "float8":
        return rng.choice([*_FLOATS, rng.uniform(-1e6, 1e6)])
    if kind == "bool":
        return rng.random() < 0.5
    # timestamptz: the same object repeated down the column, equal ones, and others
    if rng.random() < 0.5:
        return _TIMES[0]
    if rng.random() < 0.3:
        return rng.choice(_TIMES)
    moment = _TIMES[0] + timedelta(microseconds=rng.randrange(-(10**15), 10**15))
    return moment.astimezone(rng.choice(_ZONES))


def _rows(seed: int, count: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [(n, *(_value(kind, rng, n) for _, kind in COLUMNS)) for n in range(count)]


@pytest.fixture
async def pg(database: Database) -> AsyncIterator[asyncpg.Connection]:
    if database.kind != "postgres":
        pytest.skip("a PostgreSQL stream")
    schema = database.settings_for("pgcopy")["database_schema"]
    conn = await asyncpg.connect(database.root)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        for table in ("by_asyncpg", "by_stream"):
            await conn.execute(f"CREATE TABLE {table} (id int4 PRIMARY KEY, {columns})")
        yield conn
    finally:
        await conn.close()


async def _types(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    found = await conn.fetch(
        "SELECT a.attname, t.typname FROM pg_attribute AS a JOIN pg_type AS t"
        " ON t.oid = a.atttypid WHERE a.attrelid = $1::regclass AND a.attnum > 0",
        table,
    )
    return {r[0]: r[1] for r in found}


@pytest.mark.parametrize("seed", range(6))
async def test_the_stream_stores_what_asyncpg_stores_value_by_value(
    pg: asyncpg.Connection, seed: int
) -> None:
    rows = _rows(seed, 400)
    names = ["id", *(name for name, _ in COLUMNS)]
    await pg.copy_records_to_table("by_asyncpg", records=rows, columns=names)
    types = await _types(pg, "by_stream")
    stream = pgcopy.encode([list(c) for c in zip(*rows, strict=True)], [types[n] for n in names])
    assert stream is not None
    await pg.copy_to_table("by_stream", source=memoryview(stream), columns=names, format="binary")
    for name in names:  # each column's text as the server prints it (NaN, -0, bytes, zones)
        query = f"SELECT id, {name}::text AS value FROM {{}} ORDER BY 1"
        by_asyncpg = await pg.fetch(query.format("by_asyncpg"))
        assert await pg.fetch(query.format("by_stream")) == by_asyncpg, name
    assert len(by_asyncpg) == len(rows)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("int4", 2**31),  # out of range: asyncpg raises its own error
        ("int2", -(2**15) - 1),
        ("int4", True),  # a bool where an int goes
        ("float8", 1),  # an int where a float goes
        ("float4", 1e39),
        ("timestamptz", datetime(2026, 3, 1, 12, 0)),  # naive: asyncpg takes it as local time
        ("timestamptz", date(2026, 3, 1)),
        ("bytea", bytearray(b"x")),
        ("bool", 1),
        ("numeric", 1),  # a type the stream does not write
        ("_int4", [1]),
    ],
)
def test_what_the_stream_does_not_write_is_declined(kind: str, value: Any) -> None:
    assert pgcopy.encode([[value, None]], [kind]) is None
    assert pgcopy.encode([[1, 2], [value, None]], ["int4", kind]) is None


@contextmanager
def _copies() -> Iterator[dict[str, list[str]]]:
    """Which asyncpg COPY method each table went by."""
    seen: dict[str, list[str]] = {"records": [], "stream": []}
    records, stream = asyncpg.Connection.copy_records_to_table, asyncpg.Connection.copy_to_table

    async def by_records(self: Any, table_name: str, **kwargs: Any) -> Any:
        seen["records"].append(table_name)
        return await records(self, table_name, **kwargs)

    async def by_stream(self: Any, table_name: str, **kwargs: Any) -> Any:
        seen["stream"].append(table_name)
        return await stream(self, table_name, **kwargs)

    asyncpg.Connection.copy_records_to_table = by_records  # type: ignore[method-assign]
    asyncpg.Connection.copy_to_table = by_stream  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        asyncpg.Connection.copy_records_to_table = records  # type: ignore[method-assign]
        asyncpg.Connection.copy_to_table = stream  # type: ignore[method-assign]


money = MetaData()
_PRICE = Column("price", Numeric(10, 2), nullable=False)  # no stream writes numeric
priced = Table("gc_priced", money, Column("id", Integer, primary_key=True), _PRICE)


async def test_a_copied_group_goes_by_the_stream_and_a_type_it_lacks_by_asyncpg(
    database: Database,
) -> None:
    """A group taken by COPY is written as one stream a table; a table with a column the stream
    does not write (numeric) goes through asyncpg's records as before; both store Core's rows."""
    if database.kind != "postgres":
        pytest.skip("SQLite has no COPY")
    shapes = MetaData()
    rich.to_metadata(shapes)
    priced.to_metadata(shapes)
    engine = await _engine_with(database, "gcstream", shapes)
    committer = GroupCommitter(engine, copy_min_rows=1)
    await committer.start()
    try:
        with _copies() as seen:
            await asyncio.gather(
                *(
                    committer.submit(
                        inserts=[
                            (rich, _rich_row(i)),
                            (priced, {"id": i, "price": Decimal(i) / 4}),
                        ]
                    )
                    for i in range(12)
                )
            )
    finally:
        await committer.stop()
    try:
        assert seen["stream"] and set(seen["stream"]) == {"gc_rich"}
        assert set(seen["records"]) == {"gc_priced"}
        stored = await _read(engine, rich)
        assert [r["id"] for r in stored] == list(range(12))
        assert stored[0]["at"] == datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
        assert stored[1]["flag"] is True and stored[0]["blob"] == bytes(range(256))
        assert stored[1]["doc"]["list"] == [1, "二", None] and stored[1]["maybe_at"] is None
        async with engine.connect() as conn:
            prices = (await conn.execute(select(priced.c.price).order_by(priced.c.id))).all()
        assert [p for (p,) in prices] == [Decimal(i) / 4 for i in range(12)]
    finally:
        await engine.dispose()
