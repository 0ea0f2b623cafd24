"""Deadline arithmetic on the official Chinese working calendar: a profile's clocks started at a
moment become aware deadlines; extensions move them; missed clocks are found.

Working days come from the ``chinesecalendar`` package (the State Council's holiday schedule,
swapped weekend workdays included). Its data stops at a year (2026 in 1.11.0); a date beyond it
raises ``CalendarRangeError`` unless the calendar was built with ``beyond_data="weekdays"``,
which treats Monday–Friday as workdays and is only right until the next schedule is published.
``extra_holidays`` / ``extra_workdays`` let operators enter a newly published schedule before
the package catches up. Calendar logic runs in Asia/Shanghai; every datetime in and out is aware.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta

from services.dispatch.deadlines.profiles import (
    STANDARD_OFFICE_HOURS,
    ClockName,
    ClockSpec,
    DueAt,
    Duration,
    OfficeHours,
    Profile,
    Unit,
)
from shared.workcalendar import (
    OFFICIAL,
    SHANGHAI,
    WorkCalendar,
    add_working_days,
    to_shanghai,
)

# A clock crosses at most a Spring Festival week per few days of work; a year of empty
# calendar means the office hours or the calendar are broken, not that the clock is long.
_MAX_SCAN_DAYS = 366 * 3


def _at(day: date, clock_time: time) -> datetime:
    return datetime.combine(day, clock_time, SHANGHAI)


def add_working_hours(
    start: datetime,
    hours: float,
    office_hours: OfficeHours = STANDARD_OFFICE_HOURS,
    *,
    calendar: WorkCalendar = OFFICIAL,
) -> datetime:
    """The moment ``hours`` of office time have passed since ``start``.

    A start outside office hours begins counting at the next opening; a deadline that uses up
    a period exactly lands on its close (12:00), not on the next opening.
    """
    if hours < 0:
        raise ValueError(f"working hours must not be negative, got {hours}")
    local = to_shanghai(start)
    remaining = timedelta(hours=hours)
    if not remaining:
        return local
    day, cursor = local.date(), local
    for _ in range(_MAX_SCAN_DAYS):
        if calendar.is_workday(day):
            for open_at, close_at in office_hours.periods:
                begin, end = max(_at(day, open_at), cursor), _at(day, close_at)
                if begin >= end:
                    continue
                if remaining <= end - begin:
                    return begin + remaining
                remaining -= end - begin
        day += timedelta(days=1)
        cursor = _at(day, time.min)
    raise ValueError(f"{hours} working hours do not fit within {_MAX_SCAN_DAYS} days")


def working_time_between(
    start: datetime,
    end: datetime,
    office_hours: OfficeHours = STANDARD_OFFICE_HOURS,
    *,
    calendar: WorkCalendar = OFFICIAL,
) -> timedelta:
    """Office time elapsed on working days between two moments (zero if ``end`` precedes)."""
    a, b = to_shanghai(start), to_shanghai(end)
    total = timedelta()
    day = a.date()
    while day <= b.date():
        if calendar.is_workday(day):
            for open_at, close_at in office_hours.periods:
                lo, hi = max(_at(day, open_at), a), min(_at(day, close_at), b)
                if hi > lo:
                    total += hi - lo
        day += timedelta(days=1)
    return total


# --------------------------------------------------------------------------------------------
# Deadlines of profiles


def advance(
    start: datetime,
    duration: Duration,
    *,
    office_hours: OfficeHours = STANDARD_OFFICE_HOURS,
    due: DueAt = DueAt.SAME_TIME,
    calendar: WorkCalendar = OFFICIAL,
) -> datetime:
    """``start`` moved forward by ``duration`` in its own unit."""
    match duration.unit:
        case Unit.MINUTES:
            return to_shanghai(start) + timedelta(minutes=duration.amount)
        case Unit.HOURS:
            return to_shanghai(start) + timedelta(hours=duration.amount)
        case Unit.WORKING_HOURS:
            return add_working_hours(start, duration.amount, office_hours, calendar=calendar)
        case Unit.WORKING_DAYS:
            moved = add_working_days(start, int(duration.amount), calendar=calendar)
            if due is DueAt.CLOSE_OF_BUSINESS:
                return _at(moved.date(), office_hours.close)
            if due is DueAt.END_OF_DAY:
                # The last instant of the day is midnight of the next, so "< deadline" reads right.
                return _at(moved.date() + timedelta(days=1), time.min)
            return moved
    raise AssertionError(f"unhandled unit {duration.unit}")  # pragma: no cover


def deadline(spec: ClockSpec, start: datetime, *, calendar: WorkCalendar = OFFICIAL) -> datetime:
    """When one clock started at ``start`` falls due."""
    return advance(
        start, spec.duration, office_hours=spec.office_hours, due=spec.due, calendar=calendar
    )


def deadlines(
    profile: Profile, start: datetime, *, calendar: WorkCalendar = OFFICIAL
) -> dict[ClockName, datetime]:
    """Every clock of a profile started at ``start``, as aware Asia/Shanghai datetimes."""
    return {name: deadline(spec, start, calendar=calendar) for name, spec in profile.clocks.items()}


def extend(
    current_deadline: datetime,
    by: Duration,
    *,
    office_hours: OfficeHours = STANDARD_OFFICE_HOURS,
    calendar: WorkCalendar = OFFICIAL,
) -> datetime:
    """A deadline moved by an approved extension; working days keep its time of day."""
    return advance(current_deadline, by, office_hours=office_hours, calendar=calendar)


def missed_clocks(
    due: Mapping[ClockName, datetime],
    stopped_at: Mapping[ClockName, datetime],
    now: datetime,
) -> list[ClockName]:
    """Clocks that ran past their deadline: stopped late, or still running after it."""
    to_shanghai(now)
    missed = []
    for name, at in due.items():
        stop = stopped_at.get(name)
        if (stop is not None and stop > at) or (stop is None and now > at):
            missed.append(name)
    return missed
