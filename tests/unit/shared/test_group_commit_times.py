"""On SQLite the group committer writes aware times to the text SQLAlchemy's own bind
processors write (``AwareDateTime`` to UTC, then SQLite's DATETIME format), by a shorter way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, Column, MetaData, Table
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


POSTGRES = asyncpg_dialect()
FLAGS = Table("flags", MetaData(), Column("at", AwareDateTime()), Column("on", Boolean()))


def _postgres(key: str, shortcut: str) -> tuple[Any, Any]:
    """The plan's processor for ``key`` on asyncpg (checked to be the shortcut) and Core's."""
    plan = DirectInserts(POSTGRES).plan(FLAGS, ("at", "on"))
    assert plan is not None
    fast = dict(zip(plan.keys, plan.processors, strict=True))[key]
    assert fast is not None and fast.__qualname__.startswith(shortcut)
    core = FLAGS.c[key].type.dialect_impl(POSTGRES).bind_processor(POSTGRES)
    return fast, core


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=_ZONES) | st.datetimes(timezones=st.just(UTC)))
def test_postgresql_binds_an_aware_time_as_core_does(value: datetime) -> None:
    fast, core = _postgres("at", "_postgres_utc")
    try:
        expected = core(value)
    except OverflowError:
        with pytest.raises(OverflowError):
            fast(value)
        return
    got = fast(value)
    assert (got, got.tzinfo, got.utcoffset()) == (expected, expected.tzinfo, expected.utcoffset())
    assert fast(None) is core(None) is None
    with pytest.raises(ValueError, match="naive"):
        fast(value.replace(tzinfo=None))


@pytest.mark.parametrize("value", [True, False, None, 1, 0])
def test_postgresql_binds_a_flag_as_core_does(value: Any) -> None:
    fast, core = _postgres("on", "_native_bool")
    assert fast(value) is core(value)


def test_postgresql_refuses_what_core_refuses() -> None:
    fast, core = _postgres("on", "_native_bool")
    for process in (fast, core):
        with pytest.raises(TypeError):
            process("yes")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(4)), min_size=1, max_size=12))
def test_a_time_written_again_takes_its_kept_text(picks: list[int]) -> None:
    """A column of the same time objects, other times and None in any order: each value's text
    is Core's, and a time written again right after itself gives the very text it gave."""
    values = [
        datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC),
        datetime(2026, 12, 6, 9, 2, 3, 456789, tzinfo=timezone(timedelta(hours=8))),
        datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC) + timedelta(microseconds=1),
        None,
    ]
    process = _fast()
    previous: tuple[Any, Any] = (object(), None)
    for pick in picks:
        value = values[pick]
        got = process(value)
        assert got == CORE(value)
        if value is not None and value is previous[0]:
            assert got is previous[1]
        previous = (value, got)
