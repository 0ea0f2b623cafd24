"""The group committer's ``timestamptz`` codec (``shared.db.remember_times``) writes and reads
every time as asyncpg's own codec does, and the pool gets asyncpg's codec back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from shared.db import _REMEMBERS_TIMES, _time_codec, create_engine
from shared.groupcommit import GroupCommitter
from shared.settings import ServiceSettings
from tests.support import PG_URL, TEST_SECRETS, postgres_url

SHANGHAI = timezone(timedelta(hours=8))
TIMES = [
    datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC),
    datetime(2026, 12, 7, 17, 30, 15, 123456, tzinfo=SHANGHAI),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before PostgreSQL's epoch
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, 8, tzinfo=SHANGHAI),  # the first instant: asyncpg writes -infinity
    datetime(1, 1, 1, 8, 0, 0, 1, tzinfo=SHANGHAI),
    datetime(9999, 12, 31, 15, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-8))),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # the last: infinity
    datetime(2026, 3, 1, 20, 30),  # naive: local time, as asyncpg takes it
    datetime.max,  # asyncpg's infinity
    datetime.min,  # and its negative infinity
]


@pytest.fixture
async def connections():
    url, reason = await postgres_url(PG_URL)
    if url is None:
        pytest.skip(reason)
    plain, remembering = await asyncpg.connect(url), await asyncpg.connect(url)
    encode, decode = _time_codec()
    await remembering.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=encode, decoder=decode, format="binary"
    )
    try:
        yield plain, remembering
    finally:
        await plain.close()
        await remembering.close()


async def test_times_are_written_and_read_as_asyncpgs_codec_does(connections) -> None:
    plain, remembering = connections
    # Each time twice over, and the same object again: the remembered value is written again.
    values = [t for t in TIMES for _ in range(2)] + TIMES[:1]
    as_text = "SELECT CAST(v AS TEXT) FROM unnest(CAST($1 AS timestamptz[])) AS v"
    assert [r[0] for r in await remembering.fetch(as_text, values)] == [
        r[0] for r in await plain.fetch(as_text, values)
    ]
    stored = "SELECT v FROM unnest(CAST($1 AS text[])) AS t(s), CAST(t.s AS timestamptz) AS v"
    texts = [r[0] for r in await plain.fetch(as_text, values)]
    assert await remembering.fetch(stored, texts) == await plain.fetch(stored, texts)
    for conn in connections:
        await conn.execute("CREATE TEMPORARY TABLE IF NOT EXISTS copied (v timestamptz)")
        await conn.copy_records_to_table("copied", records=[(v,) for v in values])
    copied = "SELECT CAST(v AS TEXT) FROM copied"
    assert [r[0] for r in await remembering.fetch(copied)] == [
        r[0] for r in await plain.fetch(copied)
    ]


async def test_the_committers_connections_go_back_to_the_pool_with_asyncpgs_codec() -> None:
    url, reason = await postgres_url(PG_URL)
    if url is None:
        pytest.skip(reason)
    engine = create_engine(ServiceSettings(database_url=url, **TEST_SECRETS))
    committer = GroupCommitter(engine, lanes=2)
    await committer.start()
    try:
        for _ in range(500):  # each lane checks out its connection as it starts
            held = [lane.conn for lane in committer._lanes]
            if all(held):
                break
            await asyncio.sleep(0.01)
        assert all(c is not None and c.info.get(_REMEMBERS_TIMES) for c in held)
    finally:
        await committer.stop()
    try:
        async with engine.connect() as a, engine.connect() as b:
            assert not a.info.get(_REMEMBERS_TIMES) and not b.info.get(_REMEMBERS_TIMES)
            assert a.info is not b.info
    finally:
        await engine.dispose()
