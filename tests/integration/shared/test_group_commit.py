"""Group commit: concurrent writers share transactions, and one bad unit sinks nobody else."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import IntegrityError

from shared.db import GroupCommitter, create_engine
from shared.settings import ServiceSettings
from tests.support import Database

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


@pytest.fixture
async def engine(database: Database):
    settings = ServiceSettings(**database.settings_for("gc"))
    from shared.db import ensure_schema

    await ensure_schema(settings)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def _count(engine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_concurrent_units_share_transactions_and_all_commit(engine) -> None:
    commits: list[int] = []
    committer = GroupCommitter(engine, on_commit=commits.append)
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


async def test_a_failing_unit_fails_alone_and_leaves_nothing_half_stored(engine) -> None:
    committer = GroupCommitter(engine)
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
