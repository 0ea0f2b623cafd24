"""Reporting periods in Asia/Shanghai: a day, an ISO week (Monday first), a month, a quarter,
a year, or an explicit range of days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from shared.errors import Invalid

PeriodKind = Literal["day", "week", "month", "quarter", "year", "range"]
PERIOD_KINDS = ("day", "week", "month", "quarter", "year")
# The hotline's figures start this century; the bounds keep period arithmetic inside ``date``.
EARLIEST, LATEST = date(2000, 1, 1), date(2199, 12, 31)


@dataclass(frozen=True)
class Period:
    """Days ``start`` (inclusive) to ``end`` (exclusive)."""

    kind: PeriodKind
    start: date
    end: date

    @property
    def grain(self) -> str:
        """The coarsest cell grain that covers the period exactly."""
        if self.start.day == 1 and self.end.day == 1:
            return "month"
        return "week" if self.start.weekday() == 0 and self.end.weekday() == 0 else "day"

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    def previous(self) -> Period:
        """The period of the same kind just before this one."""
        return (
            period_of(self.kind, self.start - timedelta(days=1))
            if self.kind != "range"
            else (Period("range", self.start - (self.end - self.start), self.start))
        )

    def label(self) -> str:
        match self.kind:
            case "day":
                return self.start.isoformat()
            case "week":
                year, week, _ = self.start.isocalendar()
                return f"{year}-W{week:02d}"
            case "month":
                return self.start.strftime("%Y-%m")
            case "quarter":
                return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
            case "year":
                return str(self.start.year)
        return f"{self.start.isoformat()}..{self.last_day.isoformat()}"


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_of(kind: str, on: date) -> Period:
    """The period of ``kind`` that contains the day ``on``."""
    match kind:
        case "day":
            return Period("day", on, on + timedelta(days=1))
        case "week":
            start = on - timedelta(days=on.weekday())
            return Period("week", start, start + timedelta(days=7))
        case "month":
            start = on.replace(day=1)
            return Period("month", start, add_months(start, 1))
        case "quarter":
            start = date(on.year, (on.month - 1) // 3 * 3 + 1, 1)
            return Period("quarter", start, add_months(start, 3))
        case "year":
            return Period("year", date(on.year, 1, 1), date(on.year + 1, 1, 1))
    raise Invalid(f"unknown period {kind!r}; one of {', '.join(PERIOD_KINDS)}", field="period")


def resolve(
    kind: str, on: date | None, start: date | None, end: date | None, today: date
) -> Period:
    """The period a request names: ``start``..``end`` (inclusive days) or ``kind`` around
    ``on`` (default today)."""
    for name, day in (("on", on), ("start", start), ("end", end)):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise Invalid(
                f"{name} must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()}",
                field=name,
            )
    if start is not None or end is not None:
        if start is None or end is None:
            raise Invalid("give both start and end, or neither", field="start")
        if end < start:
            raise Invalid("end is before start", field="end")
        if (end - start).days > 366 * 5:
            raise Invalid("a range may span at most five years", field="end")
        return Period("range", start, end + timedelta(days=1))
    return period_of(kind, on or today)


def months_between(period: Period) -> list[date]:
    """The first days of the months a period touches."""
    months, current = [], period.start.replace(day=1)
    while current < period.end:
        months.append(current)
        current = add_months(current, 1)
    return months
