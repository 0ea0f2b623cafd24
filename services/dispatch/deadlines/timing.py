"""The deadlines one dispatch app computes: a profile's clocks on the app's working calendar,
escalation steps and extensions, with every use of the calendar's weekday fallback counted and
logged once per year, and every scheduler step the calendar refuses counted and logged once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.dispatch.deadlines.clocks import deadline, deadlines, extend
from services.dispatch.deadlines.profiles import ClockName, Duration, Profile
from services.dispatch.metrics import DispatchMetrics
from shared.clock import Clock
from shared.workcalendar import OperationalCalendar

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Started:
    """A profile's clocks started at one instant, in the forms a batch writes them: the
    deadlines in the calendar's zone (what ``Deadlines.of`` gives and the events carry), by
    clock name in UTC (the clock rows' times: the same instants, which the column type would
    otherwise convert three times a clock), and as ISO text (a dispatch's ``deadlines``).
    Shared by every dispatch started so: read, never changed."""

    due: Mapping[ClockName, datetime]
    utc: tuple[tuple[str, datetime], ...]
    text: Mapping[str, str]

    @classmethod
    def of(cls, due: Mapping[ClockName, datetime]) -> Started:
        return cls(
            due=dict(due),
            utc=tuple((name.value, at.astimezone(UTC)) for name, at in due.items()),
            text={name.value: at.isoformat() for name, at in due.items()},
        )


_Computed = tuple[Profile, Started, frozenset[date]]


class Deadlines:
    """Deadline arithmetic on one calendar, observed: fallback days and refused steps are
    counted on ``metrics`` (once bound) and logged once."""

    def __init__(self, calendar: OperationalCalendar, *, clock: Clock) -> None:
        self.calendar = calendar
        self.clock = clock
        self.metrics: DispatchMetrics | None = None
        self._warned_years: set[int] = set()
        self._warned_skips: set[str] = set()
        # The deadlines of the last start by profile code (with the profile they were computed
        # for and the fallback days they met): a batch of tickets starts hundreds of dispatches
        # at one instant on a handful of profiles.
        self._memo: tuple[datetime, OperationalCalendar, dict[str, _Computed]] | None = None

    def of(self, profile: Profile, start: datetime) -> dict[ClockName, datetime]:
        """Every clock of a profile started at ``start``; counts a calendar fallback (at every
        call, computed or remembered)."""
        return dict(self.started(profile, start).due)

    def started(self, profile: Profile, start: datetime) -> Started:
        """``of(profile, start)`` with its UTC times and text, remembered for the start (the
        caller must not change it); counts a calendar fallback at every call, as ``of``."""
        memo = self._memo
        if memo is None or memo[0] != start or memo[1] is not self.calendar:
            memo = self._memo = (start, self.calendar, {})
        known = memo[2].get(profile.code)
        if known is None or known[0] is not profile:
            with self.calendar.observe() as fallback:
                due = deadlines(profile, start, calendar=self.calendar)
            known = memo[2][profile.code] = (profile, Started.of(due), frozenset(fallback))
        self._note_fallback(set(known[2]), what=f"profile {profile.code}")
        return known[1]

    def next_step(self, profile: Profile, clock: ClockName, start: datetime) -> datetime:
        """When a missed clock escalates again: the clock's own duration after ``start``."""
        spec = profile.clocks[clock]
        with self.calendar.observe() as fallback:
            moment = deadline(spec, start, calendar=self.calendar)
        self._note_fallback(fallback, what=f"escalation step of {clock}")
        return moment

    def extend(self, profile: Profile, clock: ClockName, due: datetime, by: Duration) -> datetime:
        """A deadline moved by an approved extension, in the clock's office hours."""
        spec = profile.clocks[clock]
        with self.calendar.observe() as fallback:
            moved = extend(due, by, office_hours=spec.office_hours, calendar=self.calendar)
        self._note_fallback(fallback, what=f"extension of {clock}")
        return moved

    def _note_fallback(self, days: set[date], *, what: str) -> None:
        if not days:
            return
        years = sorted({d.year for d in days})
        for year in years:
            if self.metrics is not None:
                self.metrics.deadlines_on_fallback.labels(str(year)).inc()
            if year not in self._warned_years:
                self._warned_years.add(year)
                log.warning(
                    "calendar fallback: %s counts %d day(s) of %d by the provisional %s policy; "
                    "chinesecalendar has no data for %d and the overrides file (version %s) does "
                    "not complete it — enter the State Council's %d schedule in the calendar "
                    "overrides (see docs/dispatch.md)",
                    what,
                    sum(1 for d in days if d.year == year),
                    year,
                    self.calendar.beyond_data,
                    year,
                    self.calendar.version,
                    year,
                )

    def note_scheduler_skip(self, step: str, what: str, exc: Exception) -> None:
        """A scheduler step skipped on a calendar gap: counted every time, logged once per step
        and dispatch per process (it is retried every pass until the calendar is completed)."""
        if self.metrics is not None:
            self.metrics.scheduler_skipped.labels(step).inc()
        key = f"{step}:{what}"
        if key not in self._warned_skips:
            self._warned_skips.add(key)
            log.warning(
                "scheduler: %s of %s skipped, retried every pass until the calendar covers it: "
                "%s (calendar overrides version %s; see docs/dispatch.md, 'The calendar')",
                step,
                what,
                exc,
                self.calendar.version,
            )

    def update_calendar_gauge(self) -> None:
        """Days left before deadlines start needing the fallback."""
        if self.metrics is None:
            return
        today = self.clock.now().date()
        end = date(self.calendar.covered_through(), 12, 31)
        self.metrics.calendar_days_left.set((end - today).days)
