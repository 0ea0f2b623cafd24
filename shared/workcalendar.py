"""The official Chinese working calendar as operated — one calendar for every service.

Dispatch computes deadlines on it and evaluation counts handling time in working days on it, so
the two always agree. Working days come from the ``chinesecalendar`` package (the State
Council's holiday schedule, swapped weekend workdays included). Its data stops at a year (1.11.0
ends with 2026), and deadlines of 15 working days reach into the next year weeks before it
starts, so the gap is an operational concern, not an edge case:

- ``shared/data/calendar.yaml`` (or the file a service's settings name) lists extra holidays and
  swapped workdays, and the years whose arrangement is now complete;
- a date beyond the data and not in a complete year is a *fallback* (provisional) day: with
  ``beyond_data: statutory`` it is decided by the national holiday regulation (全国年节及纪念日
  放假办法: New Year, Spring Festival, Qingming, Labour Day, Dragon Boat, Mid-Autumn, National
  Day, the lunar and solar-term dates computed) on top of Monday–Friday, without the swapped
  weekend workdays the State Council announces each year; with ``beyond_data: weekdays`` it is
  plain Monday–Friday. Either way the computation goes on, and callers can observe which days
  were fallback days (``OperationalCalendar.observe``) to warn, count and flag the result as
  provisional; with ``beyond_data: raise`` the computation fails with ``CalendarRangeError``.

Calendar logic runs in Asia/Shanghai; every datetime in and out is timezone-aware.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import chinese_calendar
from lunar_python import Lunar
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from shared.datafiles import (
    DataFileError,
    Problem,
    packaged_text,
    parse_yaml,
    problems_from_validation,
)
from shared.errors import DomainError

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A working-day count crosses at most a Spring Festival week per few days of work; a year of
# empty calendar means the calendar is broken, not that the span is long.
_MAX_SCAN_DAYS = 366 * 3

# Fallback days met while computing something, collected by ``OperationalCalendar.observe``.
_FALLBACK_DAYS: ContextVar[set[date] | None] = ContextVar("fallback_days", default=None)


BeyondData = Literal["raise", "weekdays", "statutory"]


@cache
def statutory_holidays(year: int) -> frozenset[date]:
    """The days off the national holiday regulation fixes for ``year`` (as amended for 2025):
    New Year's Day, Spring Festival (New Year's Eve and the first three days of the first lunar
    month), Qingming (the solar term), Labour Day (1–2 May), Dragon Boat (5th of the 5th lunar
    month), Mid-Autumn (15th of the 8th lunar month) and National Day (1–3 October). Bridge
    days and swapped weekend workdays are announced yearly and are not in the regulation."""

    def lunar(month: int, day: int) -> date:
        solar = Lunar.fromYmd(year, month, day).getSolar()
        return date(solar.getYear(), solar.getMonth(), solar.getDay())

    spring = lunar(1, 1)
    qingming = Lunar.fromYmd(year, 3, 1).getJieQiTable()["清明"]
    days = {
        date(year, 1, 1),
        *(spring + timedelta(days=offset) for offset in range(-1, 3)),
        date(qingming.getYear(), qingming.getMonth(), qingming.getDay()),
        date(year, 5, 1),
        date(year, 5, 2),
        lunar(5, 5),
        lunar(8, 15),
        date(year, 10, 1),
        date(year, 10, 2),
        date(year, 10, 3),
    }
    return frozenset(days)


class CalendarError(DataFileError):
    """The calendar overrides file was refused; nothing of it was used."""

    kind = "calendar overrides"


class CalendarRangeError(DomainError, ValueError):
    """A date outside the official calendar data, with no fallback allowed."""

    def body(self) -> dict[str, Any]:
        # Raised where a deadline is needed (``beyond_data: raise`` past the calendar's data).
        return {"detail": f"the working calendar cannot compute a deadline this needs: {self}"}


@dataclass(frozen=True)
class WorkCalendar:
    """Official working days, with operator overrides and an explicit policy beyond the data."""

    beyond_data: BeyondData = "raise"
    extra_holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    @property
    def data_years(self) -> tuple[int, int]:
        """The first and last year the official data covers (computed once per process)."""
        return official_years()

    def is_workday(self, day: date) -> bool:
        """True when ``day`` is an official working day (weekend swaps and holidays applied)."""
        if day in self.extra_workdays:
            return True
        if day in self.extra_holidays:
            return False
        first, last = self.data_years
        if first <= day.year <= last:
            return _official_workday(day)
        if self.beyond_data == "weekdays":
            return day.weekday() < 5
        if self.beyond_data == "statutory":
            return day.weekday() < 5 and day not in statutory_holidays(day.year)
        raise CalendarRangeError(
            f"no official calendar data for {day.isoformat()}: chinesecalendar covers "
            f"{first}–{last}; upgrade it once the State Council publishes the schedule, add the "
            f"days as extra_holidays/extra_workdays, or use WorkCalendar(beyond_data='weekdays')"
        )


OFFICIAL = WorkCalendar()


def to_shanghai(moment: datetime) -> datetime:
    """An aware datetime in Asia/Shanghai; a naive one is refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass a timezone-aware datetime")
    return moment.astimezone(SHANGHAI)


def nth_working_day_after(day: date, n: int, *, calendar: WorkCalendar = OFFICIAL) -> date:
    """The n-th working day after ``day`` (``day`` itself is not counted; n=0 gives ``day``)."""
    if n < 0:
        raise ValueError(f"working days must not be negative, got {n}")
    current = day
    for _ in range(_MAX_SCAN_DAYS):
        if n == 0:
            return current
        current += timedelta(days=1)
        if calendar.is_workday(current):
            n -= 1
    raise ValueError(f"no working day found within {_MAX_SCAN_DAYS} days of {day}")


def add_working_days(start: datetime, n: int, *, calendar: WorkCalendar = OFFICIAL) -> datetime:
    """The same Shanghai wall-clock time on the n-th working day after the start's date."""
    local = to_shanghai(start)
    day = nth_working_day_after(local.date(), n, calendar=calendar)
    return datetime.combine(day, local.timetz())


def working_days_between(
    start: datetime, end: datetime, *, calendar: WorkCalendar = OFFICIAL
) -> float:
    """The working time from ``start`` to ``end`` in working days: each working day (Asia/
    Shanghai) counts whole, by the share of its 24 hours that lies inside the span; other days
    count nothing. The inverse of ``add_working_days`` from a working day: Monday 10:00 to
    Tuesday 10:00 is 1.0, Friday 10:00 to Monday 10:00 is 1.0 too. Negative spans give 0."""
    local_start, local_end = to_shanghai(start), to_shanghai(end)
    if local_end <= local_start:
        return 0.0
    seconds = 0.0
    day = local_start.date()
    for _ in range((local_end.date() - day).days + 1):
        if calendar.is_workday(day):
            midnight = datetime.combine(day, datetime.min.time(), SHANGHAI)
            lo = max(local_start, midnight)
            next_midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), SHANGHAI)
            hi = min(local_end, next_midnight)
            seconds += max(0.0, (hi - lo).total_seconds())
        day += timedelta(days=1)
    return seconds / 86400.0


@cache
def _official_workday(day: date) -> bool:
    """The official data's answer for one day: asked for the same few hundred days over and
    over (every deadline scans a few of them), and each ask validates its argument."""
    return bool(chinese_calendar.is_workday(day))


@cache
def official_years() -> tuple[int, int]:
    """The first and last year the installed chinesecalendar has data for."""
    years = [d.year for d in chinese_calendar.holidays]
    return min(years), max(years)


class CalendarOverrides(BaseModel):
    """The overrides file, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    beyond_data: BeyondData = "weekdays"
    holidays: list[date] = []
    workdays: list[date] = []
    complete_years: list[int] = []

    @model_validator(mode="after")
    def _consistent(self) -> CalendarOverrides:
        both = sorted(set(self.holidays) & set(self.workdays))
        if both:
            raise ValueError(f"{both[0].isoformat()} is listed as a holiday and as a workday")
        for name in ("holidays", "workdays"):
            days: list[date] = getattr(self, name)
            if len(set(days)) != len(days):
                raise ValueError(f"a date is listed twice in {name}")
        return self


def load_overrides(text: str | None = None) -> CalendarOverrides:
    """Load overrides from YAML text (default: the packaged shared/data/calendar.yaml)."""
    raw = parse_yaml(
        packaged_text("shared.data", "calendar.yaml") if text is None else text, CalendarError
    )
    try:
        return CalendarOverrides.model_validate(raw)
    except ValidationError as exc:
        problems = problems_from_validation(exc, raw, section="", noun="", key="")
        raise CalendarError(problems or [Problem(None, "", str(exc))]) from None


def load_overrides_file(path: Path | None) -> CalendarOverrides:
    """The operator's overrides file when one is configured, else the packaged one."""
    if path is None:
        return load_overrides()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarError([Problem(None, "", f"cannot be read: {exc}")]) from None
    return load_overrides(text)


@dataclass(frozen=True)
class OperationalCalendar(WorkCalendar):
    """A ``WorkCalendar`` with complete override years and an observable fallback."""

    complete_years: frozenset[int] = frozenset()
    version: str = ""

    def covered_through(self) -> int:
        """The last year that needs no fallback: the official data plus complete override
        years that follow it without a gap."""
        last = official_years()[1]
        while last + 1 in self.complete_years:
            last += 1
        return last

    def is_fallback(self, day: date) -> bool:
        """True when ``day`` would be decided by the weekday fallback (or refused)."""
        if day in self.extra_workdays or day in self.extra_holidays:
            return False
        first, last = self.data_years
        return not (first <= day.year <= last) and day.year not in self.complete_years

    def is_workday(self, day: date) -> bool:
        """Overrides, then the official data, then complete years, then the fallback policy."""
        if day in self.extra_workdays:
            return True
        if day in self.extra_holidays:
            return False
        if day.year in self.complete_years and not (
            self.data_years[0] <= day.year <= self.data_years[1]
        ):
            return day.weekday() < 5
        if self.is_fallback(day):
            seen = _FALLBACK_DAYS.get()
            if seen is not None:
                seen.add(day)
        return super().is_workday(day)

    @contextlib.contextmanager
    def observe(self) -> Iterator[set[date]]:
        """Collect the fallback days met inside the block."""
        days: set[date] = set()
        token = _FALLBACK_DAYS.set(days)
        try:
            yield days
        finally:
            _FALLBACK_DAYS.reset(token)

    def describe(self) -> dict[str, Any]:
        """What the calendar knows, for ``GET /calendar`` and the CLI."""
        first, last = self.data_years
        through = self.covered_through()
        return {
            "overrides_version": self.version,
            "official_data_years": [first, last],
            "complete_override_years": sorted(self.complete_years),
            "covered_through_year": through,
            "fallback_from": date(through + 1, 1, 1).isoformat(),
            "beyond_data": self.beyond_data,
            "extra_holidays": sorted(d.isoformat() for d in self.extra_holidays),
            "extra_workdays": sorted(d.isoformat() for d in self.extra_workdays),
        }


def build_calendar(overrides: CalendarOverrides) -> OperationalCalendar:
    """The calendar deadlines are computed on."""
    return OperationalCalendar(
        beyond_data=overrides.beyond_data,
        extra_holidays=frozenset(overrides.holidays),
        extra_workdays=frozenset(overrides.workdays),
        complete_years=frozenset(overrides.complete_years),
        version=overrides.version,
    )
