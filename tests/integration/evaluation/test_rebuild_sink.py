"""The rebuild's background writer when the rebuild fails: the batch it is writing is let
finish, nothing queued after it is written, and the database is free for the next writer."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, select

from services.evaluation.bulk import Sink
from shared import db
from shared.settings import ServiceSettings
from tests.support import Database

ROWS = 200_000

model = MetaData()
written = Table(
    "sink_written",
    model,
    Column("id", Integer, primary_key=True),
    Column("note", Text, nullable=False),
)


async def test_a_failure_beside_a_write_in_flight_leaves_no_lock_and_no_half_batch(
    database: Database,
) -> None:
    settings = ServiceSettings(
        **{**database.settings_for("evaluation_sink"), "sqlite_busy_timeout_ms": 500}
    )
    await db.ensure_schema(settings)
    engine = db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(model.create_all)
        rows = [(i, "路灯不亮" * 20) for i in range(ROWS)]
        with pytest.raises(RuntimeError, match="the fold failed"):
            async with Sink(engine) as sink:
                await sink.put(written, ["id", "note"], rows)
                await sink.put(written, ["id", "note"], [(ROWS + 1, "queued after")])
                await asyncio.sleep(0.05)  # the first batch is being written
                raise RuntimeError("the fold failed")
        # the next writer (the rebuild builds its indexes again) gets the database at once
        async with engine.begin() as conn:
            count = (await conn.execute(select(func.count()).select_from(written))).scalar_one()
            queued = (
                await conn.execute(select(func.count()).where(written.c.id == ROWS + 1))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert count in (0, ROWS), f"{count} of {ROWS} rows: a batch half written"
    assert queued == 0, "a batch queued after the failure was written"
