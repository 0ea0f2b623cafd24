"""The statutory fallback past the official data, and working days between two moments."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from shared.workcalendar import (
    SHANGHAI,
    OperationalCalendar,
    WorkCalendar,
    statutory_holidays,
    working_days_between,
)


def sh(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=SHANGHAI)


def test_the_regulation_s_holidays_of_2027_are_computed_lunar_ones_included() -> None:
    days = statutory_holidays(2027)
    # 2027: Spring Festival is 6 Feb (eve 5 Feb), Qingming 5 Apr, Dragon Boat 9 Jun,
    # Mid-Autumn 15 Sep.
    expected = {
        date(2027, 1, 1),
        date(2027, 2, 5),
        date(2027, 2, 6),
        date(2027, 2, 7),
        date(2027, 2, 8),
        date(2027, 4, 5),
        date(2027, 5, 1),
        date(2027, 5, 2),
        date(2027, 6, 9),
        date(2027, 9, 15),
        date(2027, 10, 1),
        date(2027, 10, 2),
        date(2027, 10, 3),
    }
    assert days == expected


def test_the_computed_holidays_agree_with_the_official_data_where_it_exists() -> None:
    # 2025 is the first year under the amended regulation; the official data has every one of
    # the regulation's days off (it adds bridge days on top).
    official = WorkCalendar()
    assert all(not official.is_workday(day) for day in statutory_holidays(2025))
    assert all(not official.is_workday(day) for day in statutory_holidays(2026))


def test_past_the_data_the_statutory_fallback_keeps_holidays_and_is_flagged() -> None:
    calendar = OperationalCalendar(beyond_data="statutory")
    weekdays = OperationalCalendar(beyond_data="weekdays")
    with calendar.observe() as seen:
        assert not calendar.is_workday(date(2027, 1, 1))  # a Friday, New Year's Day
        assert not calendar.is_workday(date(2027, 2, 8))  # a Monday, Spring Festival
        assert calendar.is_workday(date(2027, 1, 4))
    assert seen == {date(2027, 1, 1), date(2027, 2, 8), date(2027, 1, 4)}
    assert weekdays.is_workday(date(2027, 1, 1))  # the plain fallback is still available


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (sh(2026, 11, 23, 10), sh(2026, 11, 24, 10), 1.0),  # Monday to Tuesday
        (sh(2026, 11, 27, 10), sh(2026, 11, 30, 10), 1.0),  # Friday to Monday
        (sh(2026, 11, 23, 10), sh(2026, 11, 23, 16), 0.25),
        (sh(2026, 11, 28, 9), sh(2026, 11, 29, 18), 0.0),  # a weekend
        (sh(2026, 9, 30, 12), sh(2026, 10, 9, 12), 2.0),  # across the National Day week
        (sh(2026, 11, 24, 10), sh(2026, 11, 23, 10), 0.0),
    ],
)
def test_working_days_between(start: datetime, end: datetime, days: float) -> None:
    assert working_days_between(start, end) == pytest.approx(days)
