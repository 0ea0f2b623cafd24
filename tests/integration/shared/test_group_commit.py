"""Group commit: concurrent writers share transactions, and one bad unit sinks nobody else."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import bulk
from shared.db import AwareDateTime, create_engine, ensure_schema
from shared.groupcommit import Columns, GroupCommitter, Same
from shared.settings import ServiceSettings
from tests.support import Database

# One committer connection, and two taking groups in turn (intake's on PostgreSQL).
LANES = pytest.mark.parametrize("lanes", [1, 2])

metadata = MetaData()
items = Table(
    "gc_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(32), nullable=False, unique=True),
)
notes = Table(
    "gc_notes", metadata, Column("id", Integer, primary_key=True), Column("item", Integer)
)


async def _engine_with(database: Database, name: str, tables: MetaData):
    settings = ServiceSettings(**database.settings_for(name))
    await ensure_schema(settings)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(tables.create_all)
    return engine


@pytest.fixture
async def engine(database: Database):
    engine = await _engine_with(database, "gc", metadata)
    yield engine
    await engine.dispose()


async def _count(engine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@LANES
async def test_concurrent_units_share_transactions_and_all_commit(engine, lanes: int) -> None:
    commits: list[int] = []
    committer = GroupCommitter(engine, on_commit=commits.append, lanes=lanes)
    await committer.start()
    try:
        await asyncio.gather(
            *(
                committer.submit(
                    inserts=[(items, {"id": i, "name": f"n{i}"}), (notes, {"id": i, "item": i})]
                )
                for i in range(200)
            )
        )
    finally:
        await committer.stop()
    assert await _count(engine, items) == 200
    assert await _count(engine, notes) == 200
    assert sum(commits) == 200
    assert committer.batches < 200, "concurrent requests should have shared transactions"


@LANES
async def test_a_failing_unit_fails_alone_and_leaves_nothing_half_stored(
    engine, lanes: int
) -> None:
    committer = GroupCommitter(engine, lanes=lanes)
    await committer.start()
    try:
        results = await asyncio.gather(
            *(
                committer.submit(
                    inserts=[
                        (items, {"id": i, "name": "dup" if i in (3, 7) else f"n{i}"}),
                        (notes, {"id": i, "item": i}),
                    ]
                )
                for i in range(20)
            ),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], IntegrityError)
    # what a failed statement says (and logs) leaves out the values: they are citizens' data
    assert "parameters hidden" in str(failures[0]) and "'dup'" not in str(failures[0])
    assert await _count(engine, items) == 19
    # the failing unit's second insert was rolled back with its first
    assert await _count(engine, notes) == 19


async def test_work_callables_run_inside_the_shared_transaction(engine) -> None:
    committer = GroupCommitter(engine)
    await committer.start()

    async def work(conn):
        await conn.execute(items.insert().values(id=1, name="from-work"))
        return "done"

    try:
        assert await committer.submit(work=work) == "done"
    finally:
        await committer.stop()
    assert await _count(engine, items) == 1


async def test_submit_refused_when_not_running(engine) -> None:
    committer = GroupCommitter(engine)
    with pytest.raises(RuntimeError, match="not running"):
        await committer.submit(inserts=[(items, {"id": 1, "name": "x"})])


# --- the direct driver path: plain inserts bypass SQLAlchemy Core ---------------------------

shapes = MetaData()
rich = Table(
    "gc_rich",
    shapes,
    Column("id", Integer, primary_key=True),
    Column("code", String(8), nullable=False),
    Column("note", Text, nullable=True),
    Column("at", AwareDateTime(), nullable=False),
    Column("maybe_at", AwareDateTime(), nullable=True),
    Column("doc", JSON, nullable=False),
    Column("maybe_doc", JSON, nullable=True),
    Column("blob", LargeBinary, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("ratio", Float, nullable=True),
    Column("big", BigInteger, nullable=True),
)
rich_twin = rich.to_metadata(shapes, name="gc_rich_core")
SHANGHAI = timezone(timedelta(hours=8))


def _rich_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "code": f"c{i}",
        "note": None if i % 2 else "路灯不亮 \u2028 'quoted' \"too\"",
        "at": datetime(2026, 3, 1, 20, 30, 15, 123456, tzinfo=SHANGHAI),
        "maybe_at": None if i % 3 else datetime(2026, 3, 2, tzinfo=UTC),
        "doc": {"list": [1, "二", None], "nested": {"ok": True}} if i % 2 else [],
        "maybe_doc": None,
        "blob": None if i % 2 else bytes(range(256)),
        "flag": bool(i % 2),
        "ratio": None if i % 2 else 0.1 + i,
        "big": 2**40 + i,
    }


@pytest.fixture
async def rich_engine(database: Database):
    engine = await _engine_with(database, "gcrich", shapes)
    yield engine
    await engine.dispose()


async def _read(engine, table: Table) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(table).order_by(table.c.id))
        return [dict(r._mapping) for r in rows]


async def test_direct_inserts_store_exactly_what_core_stores(rich_engine) -> None:
    core_statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            core_statements.append(statement)

    event.listen(rich_engine.sync_engine, "before_cursor_execute", count)
    committer = GroupCommitter(rich_engine)
    await committer.start()
    try:
        await asyncio.gather(*(committer.submit(inserts=[(rich, _rich_row(i))]) for i in range(12)))
    finally:
        await committer.stop()
        event.remove(rich_engine.sync_engine, "before_cursor_execute", count)
    assert core_statements == [], "plain inserts should not have gone through Core"
    async with rich_engine.begin() as conn:
        await conn.execute(rich_twin.insert(), [_rich_row(i) for i in range(12)])

    direct, core = await _read(rich_engine, rich), await _read(rich_engine, rich_twin)
    assert direct == core
    assert direct[0]["at"] == datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert all(r["at"].tzinfo is not None and r["at"].utcoffset() == timedelta(0) for r in direct)
    assert direct[0]["maybe_at"] == datetime(2026, 3, 2, tzinfo=UTC)
    assert direct[1]["maybe_at"] is None
    assert direct[0]["doc"] == [] and direct[1]["doc"]["list"] == [1, "二", None]
    assert direct[0]["blob"] == bytes(range(256)) and direct[1]["blob"] is None
    assert direct[1]["flag"] is True and direct[0]["flag"] is False


async def test_large_groups_by_copy_store_exactly_what_core_stores(rich_engine) -> None:
    """PostgreSQL takes a group of ``copy_min_rows`` rows or more by COPY (here: every group);
    SQLite ignores the setting. Either way the rows read back as Core's."""
    committer = GroupCommitter(rich_engine, copy_min_rows=1)
    await committer.start()
    try:
        await asyncio.gather(*(committer.submit(inserts=[(rich, _rich_row(i))]) for i in range(12)))
    finally:
        await committer.stop()
    async with rich_engine.begin() as conn:
        await conn.execute(rich_twin.insert(), [_rich_row(i) for i in range(12)])
    assert await _read(rich_engine, rich) == await _read(rich_engine, rich_twin)


def _rich_columns(table: Table, first: int, count: int) -> Columns:
    """``_rich_row(first) … _rich_row(first + count - 1)`` a column at a time; the columns every
    such row holds alike (its time, its empty JSON) as one ``Same`` value."""
    rows = [_rich_row(i) for i in range(first, first + count)]
    alike = {"at", "maybe_doc"}
    assert all(r[key] == rows[0][key] for r in rows for key in alike)
    return Columns(
        table,
        count,
        {key: Same(rows[0][key]) if key in alike else [r[key] for r in rows] for key in rows[0]},
    )


@pytest.mark.parametrize("copy_min_rows", [1000, 1], ids=["direct", "copy"])
async def test_rows_given_a_column_at_a_time_store_exactly_what_core_stores(
    rich_engine, copy_min_rows: int
) -> None:
    """Units of ``Columns`` blocks (a column every row shares as one ``Same`` value), beside a
    unit of dict rows of the same table, read back as Core's rows; with ``copy_min_rows=1``
    PostgreSQL takes every group by COPY."""
    with _core_inserts(rich_engine) as core:
        committer = GroupCommitter(rich_engine, copy_min_rows=copy_min_rows)
        await committer.start()
        try:
            await asyncio.gather(
                committer.submit(inserts=[_rich_columns(rich, 0, 5)]),
                committer.submit(inserts=[_rich_columns(rich, 5, 4)]),
                committer.submit(inserts=[(rich, _rich_row(9))]),
            )
        finally:
            await committer.stop()
    assert core == [], "the direct path should have taken every group"
    async with rich_engine.begin() as conn:
        await conn.execute(rich_twin.insert(), [_rich_row(i) for i in range(10)])
    assert await _read(rich_engine, rich) == await _read(rich_engine, rich_twin)


@LANES
async def test_a_failing_unit_of_columns_fails_alone(engine, lanes: int) -> None:
    """A ``Columns`` unit that clashes is retried alone through Core, as dict rows: it fails
    with the clash and stores nothing; the units beside it are stored."""
    committer = GroupCommitter(engine, lanes=lanes)
    await committer.start()

    def unit(first: int, names: list[str]) -> list[Any]:
        ids = list(range(first, first + len(names)))
        return [
            Columns(items, len(ids), {"id": ids, "name": names}),
            Columns(notes, len(ids), {"id": ids, "item": Same(first)}),
        ]

    try:
        results = await asyncio.gather(
            committer.submit(inserts=unit(0, ["a", "b", "c"])),
            committer.submit(inserts=unit(10, ["d", "same", "same"])),
            committer.submit(inserts=unit(20, ["e", "f"])),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], IntegrityError)
    assert await _count(engine, items) == 5
    assert await _count(engine, notes) == 5
    async with engine.connect() as conn:
        stored = (await conn.execute(select(notes.c.id, notes.c.item).order_by(notes.c.id))).all()
    assert [tuple(r) for r in stored] == [(0, 0), (1, 0), (2, 0), (20, 20), (21, 20)]


_APPEAL = "路灯不亮已经三天了，晚上回家很不安全 😀𠀋"


def _cjk_row(i: int) -> dict[str, Any]:
    return {
        **_rich_row(i),
        "doc": {"text": _APPEAL, "tags": ["照明", None, i, 0.5, True], "nested": {"区": "越城"}},
        "maybe_doc": [_APPEAL] if i % 2 else None,
    }


@pytest.mark.parametrize("copy_min_rows", [1000, 1], ids=["direct", "copy"])
async def test_json_columns_are_stored_as_utf8_by_every_path_and_read_back_alike(
    rich_engine, copy_min_rows: int
) -> None:
    """Group commit (one statement, or COPY on PostgreSQL) and Core write a JSON column's
    CJK and astral text unescaped (half the bytes of the stdlib's ``\\uXXXX`` escapes) and both read
    back as the values written."""
    committer = GroupCommitter(rich_engine, copy_min_rows=copy_min_rows)
    await committer.start()
    try:
        await asyncio.gather(*(committer.submit(inserts=[(rich, _cjk_row(i))]) for i in range(6)))
    finally:
        await committer.stop()
    async with rich_engine.begin() as conn:
        await conn.execute(rich_twin.insert(), [_cjk_row(i) for i in range(6)])
    direct, core = await _read(rich_engine, rich), await _read(rich_engine, rich_twin)
    assert direct == core
    assert [(r["doc"], r["maybe_doc"]) for r in direct] == [
        (_cjk_row(i)["doc"], _cjk_row(i)["maybe_doc"]) for i in range(6)
    ]
    async with rich_engine.connect() as conn:
        for name in ("gc_rich", "gc_rich_core"):
            stored = (
                await conn.execute(text(f"SELECT CAST(doc AS TEXT) FROM {name} ORDER BY id"))
            ).scalars()
            assert all(_APPEAL in doc and "\\u" not in doc for doc in stored)


@contextmanager
def _core_inserts(engine: AsyncEngine) -> Iterator[list[str]]:
    """The INSERT statements that go through Core (a group the direct path failed, retried unit
    by unit) while the block runs."""
    core: list[str] = []

    def through_core(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            core.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", through_core)
    try:
        yield core
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", through_core)


async def _direct_statements(monkeypatch, committer: GroupCommitter, rows: list[Any]) -> list[str]:
    """Submit each unit's inserts concurrently; the statements the direct path executed
    (PostgreSQL), having checked that none went through Core (a failed group retried)."""
    sent: list[str] = []
    execute = asyncpg.Connection.execute

    async def spy(self, query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query)
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", spy)
    with _core_inserts(committer._engine) as core:
        await committer.start()
        try:
            await asyncio.gather(*(committer.submit(inserts=unit) for unit in rows))
        finally:
            await committer.stop()
            monkeypatch.undo()
    assert core == [], "the direct path failed and the units went through Core"
    return [q for q in sent if q.lstrip().upper().startswith(("INSERT", "WITH"))]


async def test_rows_by_row_type_store_exactly_what_column_arrays_store(
    rich_engine, database: Database, monkeypatch
) -> None:
    """PostgreSQL sends each table's rows as one array of the table's row type; the rows it
    stores are byte for byte those one array per column stored (SQLite: one path only)."""
    units = [[(rich, _rich_row(i))] for i in range(12)]
    twin_units = [[(rich_twin, _rich_row(i))] for i in range(12)]
    by_rows = await _direct_statements(monkeypatch, GroupCommitter(rich_engine), units)
    by_columns = await _direct_statements(
        monkeypatch, GroupCommitter(rich_engine, row_arrays=False), twin_units
    )
    if database.kind == "postgres":
        assert by_rows and all("unnest($1::gc_rich[])" in q and "$2" not in q for q in by_rows)
        assert by_columns and all("$11::" in q for q in by_columns), by_columns
        async with rich_engine.connect() as conn:
            stored = [
                (await conn.execute(text(f"SELECT t::text FROM {name} t ORDER BY id")))
                .scalars()
                .all()
                for name in ("gc_rich", "gc_rich_core")
            ]
        assert len(stored[0]) == 12 and stored[0] == stored[1]
    assert await _read(rich_engine, rich) == await _read(rich_engine, rich_twin)


async def test_rows_by_row_type_follow_the_tables_own_column_order(
    database: Database, monkeypatch
) -> None:
    """The row type is the table as the database has it: columns in another order than the
    model's, one dropped, one left to its server default — each value lands in its column."""
    model = MetaData()
    shuffled = Table(
        "gc_shuffled",
        model,
        Column("id", Integer, primary_key=True),
        Column("name", String(8), nullable=False),
        Column("note", Text),
    )
    engine = await _engine_with(database, "gcshuffled", MetaData())
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE gc_shuffled (gone INTEGER, note TEXT, extra INTEGER DEFAULT 7,"
                    " id INTEGER PRIMARY KEY, name VARCHAR(8) NOT NULL)"
                )
            )
            await conn.execute(text("ALTER TABLE gc_shuffled DROP COLUMN gone"))
        units = [[(shuffled, {"id": i, "name": f"n{i}", "note": f"路灯 {i}"})] for i in range(5)]
        await _direct_statements(monkeypatch, GroupCommitter(engine), units)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT id, name, note, extra FROM gc_shuffled ORDER BY id")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [(i, f"n{i}", f"路灯 {i}", 7) for i in range(5)]


async def test_a_column_added_while_running_is_read_again_and_nothing_is_lost(
    database: Database,
) -> None:
    """The row type remembered for a table goes stale when a column is added under a running
    service: the group that meets it still stores its units (one by one), and the next group
    reads the row type again and goes the direct way with the new column's default."""
    if database.kind != "postgres":
        pytest.skip("SQLite inserts column by column: no row type to remember")
    model = MetaData()
    grown = Table(
        "gc_grown",
        model,
        Column("id", Integer, primary_key=True),
        Column("name", String(8), nullable=False),
    )
    engine = await _engine_with(database, "gcgrown", model)
    committer = GroupCommitter(engine)
    await committer.start()
    try:
        await committer.submit(inserts=[(grown, {"id": 1, "name": "before"})])
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE gc_grown ADD COLUMN extra INTEGER DEFAULT 7"))
        await committer.submit(inserts=[(grown, {"id": 2, "name": "meets"})])
        with _core_inserts(engine) as core:
            await committer.submit(inserts=[(grown, {"id": 3, "name": "after"})])
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT id, name, extra FROM gc_grown ORDER BY id"))
            ).all()
    finally:
        await committer.stop()
        await engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "before", 7), (2, "meets", 7), (3, "after", 7)]
    assert core == [], "the group after the change still failed the direct way"


@pytest.mark.parametrize("copy_min_rows", [1, 1000], ids=["copy", "row-arrays"])
async def test_a_value_too_long_for_its_column_fails_its_unit_only(
    engine, copy_min_rows: int
) -> None:
    committer = GroupCommitter(engine, copy_min_rows=copy_min_rows)
    await committer.start()
    try:
        results = await asyncio.gather(
            committer.submit(inserts=[(items, {"id": 1, "name": "a"})]),
            committer.submit(inserts=[(items, {"id": 2, "name": "b" * 40})]),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    assert results[0] is None
    if engine.dialect.name == "postgresql":  # SQLite keeps any length in a varchar column
        assert isinstance(results[1], Exception), "the insert must refuse, not truncate"
        assert await _count(engine, items) == 1


async def test_a_naive_datetime_fails_its_own_unit_only(rich_engine) -> None:
    committer = GroupCommitter(rich_engine)
    await committer.start()
    naive = {**_rich_row(5), "at": datetime(2026, 3, 1, 12, 0)}
    try:
        results = await asyncio.gather(
            *(
                committer.submit(inserts=[(rich, naive if i == 5 else _rich_row(i))])
                for i in range(10)
            ),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and "naive datetime refused" in str(failures[0])
    assert [r["id"] for r in await _read(rich_engine, rich)] == [0, 1, 2, 3, 4, 6, 7, 8, 9]


async def test_rows_of_different_shapes_in_one_group_are_all_stored(engine) -> None:
    committer = GroupCommitter(engine)
    await committer.start()
    try:
        await asyncio.gather(
            committer.submit(inserts=[(notes, {"id": 1, "item": 7})]),
            committer.submit(inserts=[(notes, {"id": 2})]),
            committer.submit(inserts=[(items, {"id": 3, "name": "x"}), (notes, {"id": 3})]),
        )
    finally:
        await committer.stop()
    assert await _count(engine, notes) == 3
    assert await _count(engine, items) == 1


@pytest.mark.parametrize("copy_min_rows", [1000, 1], ids=["insert", "copy"])
async def test_a_unique_clash_across_tables_rolls_back_the_whole_unit(
    engine, copy_min_rows: int
) -> None:
    """The direct path writes every table of a group in one statement or by COPY in one
    transaction (PostgreSQL), or in one transaction (SQLite): a clash in the second table must
    not leave the first table's row."""
    committer = GroupCommitter(engine, copy_min_rows=copy_min_rows)
    await committer.start()
    try:
        await committer.submit(inserts=[(notes, {"id": 100, "item": 0})])
        results = await asyncio.gather(
            committer.submit(inserts=[(items, {"id": 1, "name": "a"}), (notes, {"id": 1})]),
            committer.submit(inserts=[(items, {"id": 2, "name": "b"}), (notes, {"id": 100})]),
            return_exceptions=True,
        )
    finally:
        await committer.stop()
    assert results[0] is None and isinstance(results[1], IntegrityError)
    assert await _count(engine, items) == 1
    assert await _count(engine, notes) == 2


@pytest.mark.postgres
@LANES
async def test_committer_survives_its_connection_being_killed(
    engine, database: Database, lanes: int
) -> None:
    if database.kind != "postgres":
        pytest.skip("SQLite has no server that could close the connection")
    committer = GroupCommitter(engine, lanes=lanes)
    await committer.start()
    try:
        await committer.submit(inserts=[(items, {"id": 1, "name": "a"})])
        killer = await asyncpg.connect(database.root)
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name = $1",
                ServiceSettings(**database.settings_for("gc")).database_application_name,
            )
        finally:
            await killer.close()
        await asyncio.sleep(0.1)
        await committer.submit(inserts=[(items, {"id": 2, "name": "b"})])
        await committer.submit(inserts=[(items, {"id": 3, "name": "c"})])
    finally:
        await committer.stop()
    assert await _count(engine, items) == 3


@pytest.mark.postgres
async def test_pool_discards_connections_the_server_closed(engine, database: Database) -> None:
    if database.kind != "postgres":
        pytest.skip("SQLite has no server that could close the connection")
    async with engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    killer = await asyncpg.connect(database.root)
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await killer.close()
    await asyncio.sleep(0.1)
    async with engine.connect() as conn:  # no pre-ping: the closed one must not be handed out
        assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid


async def test_python_side_defaults_are_filled_as_core_fills_them(rich_engine) -> None:
    defaults = MetaData()
    stamped = Table(
        "gc_stamped",
        defaults,
        Column("id", Integer, primary_key=True),
        # nullable: a path that skipped the defaults would store NULLs without an error
        Column("kind", String(8), nullable=True, default="plain"),
        Column("doc", JSON, nullable=True, default=dict),
    )
    async with rich_engine.begin() as conn:
        await conn.run_sync(defaults.create_all)
    committer = GroupCommitter(rich_engine)
    await committer.start()
    try:
        await asyncio.gather(*(committer.submit(inserts=[(stamped, {"id": i})]) for i in range(3)))
    finally:
        await committer.stop()
    rows = await _read(rich_engine, stamped)
    assert [(r["kind"], r["doc"]) for r in rows] == [("plain", {})] * 3


async def test_a_write_lock_held_elsewhere_fails_the_group_at_once(
    database: Database, tmp_path
) -> None:
    if database.kind != "sqlite":
        pytest.skip("a SQLite write lock: PostgreSQL has row locks, not a database lock")
    settings = ServiceSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}", sqlite_busy_timeout_ms=100
    )
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    committer = GroupCommitter(engine)
    retried_alone: list[int] = []
    alone = committer._commit_alone

    async def spy(group: list[Any], lane: Any) -> None:
        retried_alone.append(len(group))
        await alone(group, lane)

    committer._commit_alone = spy  # type: ignore[method-assign]
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    await committer.start()
    try:
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        results = await asyncio.gather(
            *(committer.submit(inserts=[(items, {"id": i, "name": f"n{i}"})]) for i in range(5)),
            return_exceptions=True,
        )
        other.execute("ROLLBACK")
        await committer.submit(inserts=[(items, {"id": 9, "name": "after"})])
    finally:
        other.close()
        await committer.stop()
        await engine.dispose()
    assert all(isinstance(r, OperationalError) and "locked" in str(r) for r in results), results
    assert retried_alone == []  # no unit waited out the busy timeout a second time


async def test_a_unit_whose_work_is_cancelled_fails_alone_and_the_committer_carries_on(
    engine,
) -> None:
    committer = GroupCommitter(engine)
    await committer.start()

    async def cancelled_work(conn) -> None:
        # What a unit sees when something it awaits is cancelled under it (not the committer).
        raise asyncio.CancelledError

    try:
        async with asyncio.timeout(10):  # before the fix, the group's callers waited forever
            results = await asyncio.gather(
                *(
                    committer.submit(inserts=[(items, {"id": i, "name": f"n{i}"})])
                    for i in range(8)
                ),
                committer.submit(work=cancelled_work),
                return_exceptions=True,
            )
            await committer.submit(inserts=[(items, {"id": 99, "name": "after"})])
    finally:
        await committer.stop()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and "cancelled" in str(failures[0]), results
    assert await _count(engine, items) == 9


async def test_statements_are_planned_for_their_parameters_each_time(
    engine, database: Database
) -> None:
    """A prepared look-up by an array of ids gets a plan for the ids it is given, never the
    generic plan PostgreSQL would fix after five runs while the table is still empty (it kept
    the array as a filter over every row, and the inbox look-up grew with its table)."""
    if database.kind != "postgres":
        pytest.skip("SQLite prepares no server-side plans")
    async with engine.connect() as conn:
        for n in range(8):
            for condition in bulk.among(conn, items.c.id, [n, n + 1, n + 2]):
                await conn.execute(select(items.c.id).where(condition))
        plans = (
            await conn.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%= ANY%' AND statement NOT LIKE '%pg_prepared%'"
                )
            )
        ).all()
    assert plans, "the look-up was prepared on the server"
    assert all(generic == 0 for generic, _ in plans), plans
    assert sum(custom for _, custom in plans) >= 8
