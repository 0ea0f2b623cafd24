"""On SQLite the group committer writes aware times to the text SQLAlchemy's own bind
processors write (``AwareDateTime`` to UTC, then SQLite's DATETIME format), by a shorter way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, MetaData, Table
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect

from shared.db import AwareDateTime
from shared.groupcommit import DirectInserts

TABLE = Table("times", MetaData(), Column("at", AwareDateTime()))
SQLITE = aiosqlite_dialect()
CORE = AwareDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)

_ZONES = st.timezones() | st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)


def _fast() -> Any:
    plan = DirectInserts(SQLITE).plan(TABLE, ("at",))
    assert plan is not None
    (process,) = plan.processors
    assert process is not None and process.__qualname__.startswith("_sqlite_utc_text")
    return process


@settings(max_examples=500, deadline=None)
@given(st.datetimes(timezones=_ZONES) | st.datetimes(timezones=st.just(UTC)))
def test_an_aware_time_is_written_as_core_writes_it(value: datetime) -> None:
    try:
        expected = CORE(value)
    except OverflowError:
        with pytest.raises(OverflowError):
            _fast()(value)
        return
    assert _fast()(value) == expected


def test_other_values_go_through_core() -> None:
    process = _fast()
    assert process(None) is None
    with pytest.raises(ValueError, match="naive"):
        process(datetime(2026, 12, 6, 1, 2, 3))
    assert process(datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC)) == "2026-12-06 01:02:03.000000"


def test_postgresql_keeps_its_own_processor() -> None:
    dialect = asyncpg_dialect()
    plan = DirectInserts(dialect).plan(TABLE, ("at",))
    assert plan is not None
    core = AwareDateTime().dialect_impl(dialect).bind_processor(dialect)
    moment = datetime(2026, 12, 6, 9, tzinfo=timezone(timedelta(hours=8)))
    assert plan.processors[0] is not None and core is not None
    assert plan.processors[0](moment) == core(moment)
