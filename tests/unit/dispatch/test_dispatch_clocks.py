"""Time limits on the official calendar: hand-checked dates and properties against the data."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dispatch.deadlines.clocks import (
    add_working_hours,
    deadlines,
    extend,
    missed_clocks,
    working_time_between,
)
from services.dispatch.deadlines.profiles import (
    STANDARD_OFFICE_HOURS,
    ClockName,
    Duration,
    OfficeHours,
    ProfilesError,
    Unit,
    UnknownProfile,
    default_profiles,
    load_profiles,
)
from shared.workcalendar import (
    SHANGHAI,
    CalendarRangeError,
    WorkCalendar,
    add_working_days,
    nth_working_day_after,
)

PROFILES = default_profiles()
PERIODS = ((time(9), time(12)), (time(13, 30), time(17, 30)))


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SHANGHAI)


# ---- the calendar, hand-checked ------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "workday"),
    [
        (date(2025, 9, 28), True),  # Sunday, worked for National Day
        (date(2025, 10, 11), True),  # Saturday, worked for National Day
        (date(2025, 10, 1), False),
        (date(2025, 10, 8), False),
        (date(2025, 10, 9), True),
        (date(2025, 1, 26), True),  # Sunday, worked for Spring Festival 2025
        (date(2025, 2, 8), True),  # Saturday, worked for Spring Festival 2025
        (date(2026, 1, 1), False),
        (date(2026, 1, 4), True),  # Sunday, worked for New Year 2026
        (date(2026, 2, 14), True),  # Saturday, worked for Spring Festival 2026
        (date(2026, 2, 16), False),
        (date(2026, 2, 28), True),  # Saturday, worked for Spring Festival 2026
        (date(2025, 10, 12), False),  # an ordinary Sunday
    ],
)
def test_official_calendar_days(day: date, workday: bool) -> None:
    assert WorkCalendar().is_workday(day) is workday


def test_a_swapped_sunday_counts_as_the_next_working_day() -> None:
    assert add_working_days(sh(2025, 9, 26, 10), 1) == sh(2025, 9, 28, 10)


def test_national_day_2025_is_skipped_and_the_swapped_saturday_counts() -> None:
    start = sh(2025, 9, 30, 16)
    assert add_working_days(start, 1) == sh(2025, 10, 9, 16)
    assert add_working_days(start, 2) == sh(2025, 10, 10, 16)
    assert add_working_days(start, 3) == sh(2025, 10, 11, 16)
    assert add_working_days(start, 4) == sh(2025, 10, 13, 16)


def test_new_year_2026_crosses_the_year_to_a_swapped_sunday() -> None:
    assert add_working_days(sh(2025, 12, 31, 10), 1) == sh(2026, 1, 4, 10)
    assert add_working_days(sh(2025, 12, 31, 10), 2) == sh(2026, 1, 5, 10)


def test_spring_festival_2026() -> None:
    assert add_working_days(sh(2026, 2, 13, 9), 1) == sh(2026, 2, 14, 9)
    assert add_working_days(sh(2026, 2, 13, 9), 2) == sh(2026, 2, 24, 9)


def test_zero_working_days_is_the_start_itself() -> None:
    assert add_working_days(sh(2025, 10, 1, 8), 0) == sh(2025, 10, 1, 8)


def test_results_are_aware_and_in_shanghai_even_for_utc_input() -> None:
    start = datetime(2025, 9, 30, 8, 0, tzinfo=UTC)  # 16:00 in Shanghai
    result = add_working_days(start, 1)
    assert result == sh(2025, 10, 9, 16)
    assert result.utcoffset() == timedelta(hours=8)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        add_working_days(datetime(2025, 9, 30, 16), 1)
    with pytest.raises(ValueError, match="naive"):
        add_working_hours(datetime(2025, 9, 30, 16), 1)


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        add_working_days(sh(2025, 9, 30), -1)
    with pytest.raises(ValueError):
        add_working_hours(sh(2025, 9, 30), -0.5)
    with pytest.raises(ValueError):
        Duration(1.5, Unit.WORKING_DAYS)


# ---- beyond the data ----------------------------------------------------------------------


def test_dates_beyond_the_data_raise_a_clear_error() -> None:
    last = WorkCalendar().data_years[1]
    with pytest.raises(CalendarRangeError, match=f"no official calendar data for {last + 1}"):
        add_working_days(sh(last, 12, 31, 10), 1)


def test_the_weekday_fallback_is_explicit() -> None:
    last = WorkCalendar().data_years[1]
    calendar = WorkCalendar(beyond_data="weekdays")
    friday = next(date(last + 1, 1, d) for d in range(1, 8) if date(last + 1, 1, d).weekday() == 4)
    start = datetime.combine(friday, time(10), SHANGHAI)
    assert add_working_days(start, 1, calendar=calendar).weekday() == 0


def test_operators_can_enter_a_newly_published_schedule() -> None:
    calendar = WorkCalendar(
        extra_holidays=frozenset({date(2025, 10, 13)}),
        extra_workdays=frozenset({date(2025, 10, 12)}),
    )
    assert calendar.is_workday(date(2025, 10, 12))
    assert not calendar.is_workday(date(2025, 10, 13))
    assert add_working_days(sh(2025, 10, 11, 9), 2, calendar=calendar) == sh(2025, 10, 14, 9)


# ---- working hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        (sh(2025, 10, 13, 11), 2, sh(2025, 10, 13, 14, 30)),  # lunch does not count
        (sh(2025, 10, 13, 12, 30), 1, sh(2025, 10, 13, 14, 30)),  # starts at 13:30
        (sh(2025, 10, 13, 8), 3, sh(2025, 10, 13, 12)),  # lands exactly on the close
        (sh(2025, 10, 10, 17), 1, sh(2025, 10, 11, 9, 30)),  # Friday → swapped Saturday
        (sh(2025, 10, 17, 17), 1, sh(2025, 10, 20, 9, 30)),  # Friday → Monday
        (sh(2025, 9, 30, 16), 2, sh(2025, 10, 9, 9, 30)),  # across National Day
        (sh(2025, 10, 13, 20), 7, sh(2025, 10, 14, 17, 30)),  # a whole working day
        (sh(2025, 10, 13, 10), 0, sh(2025, 10, 13, 10)),
    ],
)
def test_add_working_hours(start: datetime, hours: float, expected: datetime) -> None:
    assert add_working_hours(start, hours) == expected


def test_office_hours_are_validated() -> None:
    assert OfficeHours.parse(["09:00-12:00", "13:30-17:30"]) == STANDARD_OFFICE_HOURS
    for bad in (["9-12"], ["12:00-09:00"], ["09:00-12:00", "11:00-14:00"], ["25:00-26:00"], []):
        with pytest.raises(ValueError):
            OfficeHours.parse(bad)


def test_other_office_hours_move_the_deadline() -> None:
    summer = PROFILES.office_hours["summer"]
    assert add_working_hours(sh(2025, 7, 14, 11), 2, summer) == sh(2025, 7, 14, 15)


# ---- profiles and deadlines ---------------------------------------------------------------


def test_the_required_profiles_exist_with_their_clocks() -> None:
    assert set(PROFILES.profiles) >= {"standard", "enterprise_2115", "whistle", "urgent"}
    standard = PROFILES.get("standard").clocks
    assert standard[ClockName.SIGN_FOR].duration == Duration(2, Unit.WORKING_HOURS)
    assert standard[ClockName.FIRST_CONTACT].duration == Duration(1, Unit.WORKING_DAYS)
    assert standard[ClockName.RESOLUTION].duration == Duration(5, Unit.WORKING_DAYS)
    enterprise = PROFILES.get("enterprise_2115").clocks
    assert enterprise[ClockName.FIRST_CONTACT].duration == Duration(2, Unit.WORKING_HOURS)
    assert enterprise[ClockName.FEEDBACK].duration == Duration(1, Unit.WORKING_DAYS)
    assert enterprise[ClockName.RESOLUTION].duration == Duration(15, Unit.WORKING_DAYS)
    assert PROFILES.get("whistle").clocks[ClockName.REPORT].duration == Duration(30, Unit.MINUTES)
    with pytest.raises(UnknownProfile, match="nope"):
        PROFILES.get("nope")


def test_standard_deadlines_around_national_day_2025() -> None:
    due = deadlines(PROFILES.get("standard"), sh(2025, 9, 30, 16))
    assert due == {
        ClockName.SIGN_FOR: sh(2025, 10, 9, 9, 30),
        ClockName.FIRST_CONTACT: sh(2025, 10, 9, 17, 30),
        ClockName.RESOLUTION: sh(2025, 10, 14, 17, 30),
    }


def test_enterprise_2115_deadlines_around_national_day_2025() -> None:
    due = deadlines(PROFILES.get("enterprise_2115"), sh(2025, 9, 30, 16))
    assert due[ClockName.FIRST_CONTACT] == sh(2025, 10, 9, 9, 30)
    assert due[ClockName.FEEDBACK] == sh(2025, 10, 9, 17, 30)
    # Oct 9, 10, 11 (Sat, swapped), 13–17, 20–24, 27, 28: the 15th working day.
    assert due[ClockName.RESOLUTION] == sh(2025, 10, 28, 17, 30)


def test_whistle_and_urgent_clocks_run_through_holidays_and_nights() -> None:
    assert deadlines(PROFILES.get("whistle"), sh(2025, 10, 1, 3)) == {
        ClockName.REPORT: sh(2025, 10, 1, 3, 30)
    }
    urgent = deadlines(PROFILES.get("urgent"), sh(2025, 10, 1, 22))
    assert urgent[ClockName.SIGN_FOR] == sh(2025, 10, 1, 22, 30)
    assert urgent[ClockName.RESOLUTION] == sh(2025, 10, 2, 22)


def test_extend_moves_a_deadline_keeping_its_time_of_day() -> None:
    old = sh(2025, 9, 30, 17, 30)
    assert extend(old, Duration(2, Unit.WORKING_DAYS)) == sh(2025, 10, 10, 17, 30)
    assert extend(old, Duration(1, Unit.WORKING_HOURS)) == sh(2025, 10, 9, 10)
    assert extend(old, Duration(3, Unit.HOURS)) == sh(2025, 9, 30, 20, 30)


def test_missed_clocks() -> None:
    due = {ClockName.SIGN_FOR: sh(2025, 10, 9, 9, 30), ClockName.RESOLUTION: sh(2025, 10, 14)}
    now = sh(2025, 10, 9, 10)
    assert missed_clocks(due, {}, now) == [ClockName.SIGN_FOR]
    assert missed_clocks(due, {ClockName.SIGN_FOR: sh(2025, 10, 9, 9)}, now) == []
    assert missed_clocks(due, {ClockName.SIGN_FOR: sh(2025, 10, 9, 9, 45)}, now) == [
        ClockName.SIGN_FOR
    ]
    assert missed_clocks(due, {}, sh(2025, 10, 15)) == [ClockName.SIGN_FOR, ClockName.RESOLUTION]


# ---- refusing a bad profiles file ---------------------------------------------------------

HEAD = 'version: "t"\noffice_hours:\n  standard: ["09:00-12:00"]\nprofiles:\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  p: {name_zh: a, name_en: a, clocks: {sign_for: {hours: 1, working_days: 1}}}\n",
            "profile 'p' field clocks.sign_for: give exactly one of",
        ),
        (
            "  p: {name_zh: a, name_en: a, clocks: {sign_for: {fortnights: 1}}}\n",
            "profile 'p' field clocks.sign_for.fortnights: Extra inputs are not permitted",
        ),
        (
            "  p: {name_zh: a, name_en: a, clocks: {lunch: {hours: 1}}}\n",
            "profile 'p' field clocks.lunch",
        ),
        (
            "  p: {name_zh: a, name_en: a, clocks: {sign_for: {hours: 1, due: end_of_day}}}\n",
            "due applies to working_days clocks only",
        ),
        (
            "  p: {name_zh: a, name_en: a, office_hours: night, clocks: {sign_for: {hours: 1}}}\n",
            "profile 'p' field office_hours: unknown set 'night'",
        ),
        (
            "  p: {name_zh: a, name_en: a, clocks: {}}\n",
            "profile 'p' field clocks: a profile needs at least one clock",
        ),
        (
            "  p: {name_zh: a, name_en: a, clocks: {sign_for: {minutes: -5}}}\n",
            "a clock must not be negative",
        ),
    ],
)
def test_bad_profiles_are_refused_naming_profile_and_field(body: str, expected: str) -> None:
    with pytest.raises(ProfilesError) as caught:
        load_profiles(HEAD + body)
    assert expected in str(caught.value)


def test_bad_office_hours_are_refused() -> None:
    text = 'version: "t"\noffice_hours:\n  standard: ["9-12"]\nprofiles: {}\n'
    with pytest.raises(ProfilesError, match="office hours 'standard'"):
        load_profiles(text)


def test_due_variants() -> None:
    text = HEAD + (
        "  p: {name_zh: a, name_en: a, clocks: {feedback: {working_days: 1, due: end_of_day},"
        " resolution: {working_days: 1, due: same_time}}}\n"
    )
    due = deadlines(load_profiles(text).get("p"), sh(2025, 9, 30, 10))
    assert due[ClockName.FEEDBACK] == sh(2025, 10, 10, 0)
    assert due[ClockName.RESOLUTION] == sh(2025, 10, 9, 10)


# ---- properties against the official data -------------------------------------------------


def _oracle_nth_workday(day: date, n: int) -> date:
    """The n-th working day after ``day`` by chinese_calendar's own list (an independent path)."""
    last = min(day + timedelta(days=120), date(WorkCalendar().data_years[1], 12, 31))
    return chinese_calendar.get_workdays(day + timedelta(days=1), last)[n - 1]


def _starts(first: date, last: date) -> st.SearchStrategy[datetime]:
    return st.builds(
        lambda d, minute: datetime.combine(d, time.min, SHANGHAI) + timedelta(minutes=minute),
        st.dates(min_value=first, max_value=last),
        st.integers(min_value=0, max_value=24 * 60 - 1),
    )


@settings(max_examples=200, deadline=None)
@given(start=_starts(date(2024, 1, 1), date(2026, 9, 30)), n=st.integers(1, 40))
def test_working_days_agree_with_the_official_calendar(start: datetime, n: int) -> None:
    result = add_working_days(start, n)
    assert result.date() == _oracle_nth_workday(start.date(), n)
    assert result.timetz() == start.timetz()
    assert chinese_calendar.is_workday(result.date())


@settings(max_examples=150, deadline=None)
@given(start=_starts(date(2025, 12, 20), date(2026, 1, 6)), n=st.integers(1, 12))
def test_working_days_across_the_2025_2026_year_boundary(start: datetime, n: int) -> None:
    result = add_working_days(start, n)
    assert result.date() == _oracle_nth_workday(start.date(), n)
    crossed = [
        start.date() + timedelta(days=k) for k in range(1, (result.date() - start.date()).days + 1)
    ]
    assert sum(chinese_calendar.is_workday(d) for d in crossed) == n


@settings(max_examples=150, deadline=None)
@given(
    start=st.one_of(
        _starts(date(2025, 1, 15), date(2025, 2, 10)),  # Sun 26 Jan and Sat 8 Feb worked
        _starts(date(2026, 2, 5), date(2026, 3, 2)),  # Sat 14 Feb and Sat 28 Feb worked
        _starts(date(2025, 9, 20), date(2025, 10, 12)),  # Sun 28 Sep and Sat 11 Oct worked
    ),
    n=st.integers(1, 15),
)
def test_working_days_through_festivals_with_swapped_weekend_workdays(
    start: datetime, n: int
) -> None:
    result = add_working_days(start, n)
    assert result.date() == _oracle_nth_workday(start.date(), n)


SWAPPED = sorted(
    d for d in chinese_calendar.workdays if d.weekday() >= 5 and 2024 <= d.year <= 2026
)


@settings(max_examples=60, deadline=None)
@given(swapped=st.sampled_from(SWAPPED), hour=st.integers(0, 23))
def test_every_swapped_weekend_workday_is_counted(swapped: date, hour: int) -> None:
    start = datetime.combine(swapped - timedelta(days=1), time(hour), SHANGHAI)
    assert add_working_days(start, 1).date() == swapped


@settings(max_examples=150, deadline=None)
@given(
    start=_starts(date(2024, 1, 1), date(2026, 9, 30)), a=st.integers(0, 20), b=st.integers(0, 20)
)
def test_working_days_add_up(start: datetime, a: int, b: int) -> None:
    assert add_working_days(add_working_days(start, a), b) == add_working_days(start, a + b)


def _oracle_office_time(start: datetime, end: datetime) -> timedelta:
    """Office time between two moments, straight from chinese_calendar.is_workday."""
    total = timedelta()
    day = start.date()
    while day <= end.date():
        if chinese_calendar.is_workday(day):
            for opens, closes in PERIODS:
                lo = max(datetime.combine(day, opens, SHANGHAI), start)
                hi = min(datetime.combine(day, closes, SHANGHAI), end)
                total += max(hi - lo, timedelta())
        day += timedelta(days=1)
    return total


@settings(max_examples=200, deadline=None)
@given(
    start=_starts(date(2024, 12, 20), date(2026, 9, 30)),
    quarters=st.integers(min_value=1, max_value=4 * 40),
)
def test_working_hours_agree_with_the_official_calendar(start: datetime, quarters: int) -> None:
    hours = quarters / 4
    result = add_working_hours(start, hours)
    assert _oracle_office_time(start, result) == timedelta(hours=hours)
    assert working_time_between(start, result) == timedelta(hours=hours)
    # The earliest such moment: strictly inside a period on a working day, or at its close.
    assert chinese_calendar.is_workday(result.date())
    assert any(opens < result.time() <= closes for opens, closes in PERIODS)


@settings(max_examples=100, deadline=None)
@given(start=_starts(date(2024, 1, 1), date(2026, 9, 30)), n=st.integers(0, 30))
def test_nth_working_day_after_matches_add_working_days(start: datetime, n: int) -> None:
    assert nth_working_day_after(start.date(), n) == add_working_days(start, n).date()
