"""A session fits a mediator's weekly availability on Shanghai wall-clock time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.mediation.sessions import fits

MONDAY_OFFICE = [{"weekday": 1, "start": "09:00", "end": "17:00"}]
EVENINGS = [{"weekday": 5, "start": "18:00", "end": "24:00"}]


def _utc(day: int, hour: int, minute: int = 0) -> datetime:
    # December 2030: the 2nd is a Monday; Shanghai is UTC+8.
    return datetime(2030, 12, day, hour, minute, tzinfo=UTC)


def test_a_session_inside_a_slot_fits() -> None:
    assert fits(MONDAY_OFFICE, _utc(2, 1), _utc(2, 2))  # Monday 09:00–10:00
    assert fits(MONDAY_OFFICE, _utc(2, 8), _utc(2, 9))  # Monday 16:00–17:00


def test_outside_the_slot_or_on_another_day_does_not() -> None:
    assert not fits(MONDAY_OFFICE, _utc(2, 8, 30), _utc(2, 9, 30))  # runs past 17:00
    assert not fits(MONDAY_OFFICE, _utc(2, 0, 45), _utc(2, 1, 30))  # starts before 09:00
    assert not fits(MONDAY_OFFICE, _utc(3, 1), _utc(3, 2))  # Tuesday


def test_a_slot_may_run_to_midnight() -> None:
    assert fits(EVENINGS, _utc(6, 14), _utc(6, 16))  # Friday 22:00–24:00
    assert not fits(EVENINGS, _utc(6, 15), _utc(6, 17))  # into Saturday


def test_no_availability_given_means_available() -> None:
    nothing: list[dict[str, Any]] = []
    assert fits(nothing, _utc(7, 14), _utc(7, 15))
