"""The group committer's ``timestamptz`` encoder remembers the time objects it wrote: each
object is converted once however its values interleave, and what it writes is what a fresh
conversion of each value writes (asyncpg's own bytes: tests/integration/shared/
test_remembered_times.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import db

SHANGHAI = timezone(timedelta(hours=8))
TIMES = st.datetimes(timezones=st.just(UTC) | st.just(SHANGHAI)) | st.datetimes()


@settings(max_examples=200, deadline=None)
@given(st.lists(TIMES, min_size=1, max_size=20), st.lists(st.integers(0, 19), max_size=300))
def test_what_is_written_is_each_values_own_conversion(
    values: list[datetime], picks: list[int]
) -> None:
    encode, _ = db._time_codec()
    sequence = [values[p % len(values)] for p in picks] + values * 5  # past the memory's size
    written = [encode(v) for v in sequence]
    assert written == [db._time_codec()[0](v) for v in sequence]


def test_interleaved_times_are_each_converted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[datetime] = []
    micros = db._micros

    def counting(value: datetime) -> bytes:
        converted.append(value)
        return micros(value)

    monkeypatch.setattr(db, "_micros", counting)
    encode, _ = db._time_codec()
    accepted = datetime(2026, 12, 7, 9, tzinfo=UTC)
    occurred = datetime(2026, 12, 7, 9, 0, 0, 1, tzinfo=UTC)
    for _ in range(1000):  # a batch file's audit rows: the events' time, then the acceptance's
        encode(occurred)
        encode(accepted)
    assert converted == [occurred, accepted]
    # an equal but other object is converted again (kept by identity, not by value)
    encode(datetime(2026, 12, 7, 9, tzinfo=UTC))
    assert len(converted) == 3
