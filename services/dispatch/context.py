"""What every dispatch operation needs besides a session: the time, the calendar, the profiles,
the organisation and rules as currently in the database (cached by revision), and metrics.

One ``DispatchContext`` is built per app in ``app.create_app``; tests pass a ``ManualClock`` to
make "now" theirs to move, so clocks, escalations and grab windows never need a sleep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch import organisation
from services.dispatch.clocks import (
    ClockName,
    Duration,
    Profile,
    ProfileSet,
    deadline,
    deadlines,
    default_profiles,
    extend,
)
from services.dispatch.models import RuleSetRow, outbox_table
from services.dispatch.orgchart import OrgChart
from services.dispatch.routing import RuleSet, load_rules
from services.dispatch.settings import DispatchSettings
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import Runtime, ServiceContext
from shared.workcalendar import OperationalCalendar, build_calendar, load_overrides_file

log = logging.getLogger(__name__)


class DispatchMetrics:
    """Dispatch's own metrics, on the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.actions = Counter(
            "fengqiao_dispatch_actions_total",
            "Workflow actions applied to dispatches, by action.",
            ["action"],
            registry=registry,
        )
        self.escalations = Counter(
            "fengqiao_dispatch_escalations_total",
            "Missed clocks escalated one tier up, by clock.",
            ["clock"],
            registry=registry,
        )
        self.grabs_expired = Counter(
            "fengqiao_dispatch_grab_expired_total",
            "Pooled tickets nobody grabbed in time, assigned and supervised.",
            registry=registry,
        )
        self.scheduler_errors = Counter(
            "fengqiao_dispatch_scheduler_errors_total",
            "Scheduler passes that failed (retried on the next pass).",
            registry=registry,
        )
        self.scheduler_skipped = Counter(
            "fengqiao_dispatch_scheduler_skipped_total",
            "Scheduler steps skipped because the calendar refused a deadline they need "
            "(beyond_data: raise past the calendar's data); retried every pass. By step: "
            "escalate (a missed clock), assign (an expired grab window).",
            ["step"],
            registry=registry,
        )
        self.deadlines_on_fallback = Counter(
            "fengqiao_dispatch_deadlines_on_fallback_total",
            "Deadlines computed with the weekday fallback: beyond the official calendar data and "
            "the operators' overrides. Fill data/calendar.yaml when the schedule is published.",
            ["year"],
            registry=registry,
        )
        self.calendar_days_left = Gauge(
            "fengqiao_dispatch_calendar_days_covered",
            "Days from today to the end of the last year the calendar covers without fallback.",
            registry=registry,
        )


@dataclass(frozen=True)
class ActiveRules:
    """The routing rules in force: the newest activated rules file."""

    id: int
    rules: RuleSet
    text: str
    activated_at: datetime
    activated_by: str


class DispatchContext(ServiceContext):
    """The clock, calendar, profiles, org chart and rules one dispatch app works with."""

    settings: DispatchSettings

    def __init__(
        self,
        settings: DispatchSettings,
        *,
        clock: Clock | None = None,
        calendar: OperationalCalendar | None = None,
        profiles: ProfileSet | None = None,
    ) -> None:
        super().__init__(settings, outbox=Outbox(outbox_table), clock=clock)
        self.calendar = calendar or build_calendar(load_overrides_file(settings.calendar_file))
        self.profiles = profiles or default_profiles()
        self.metrics: DispatchMetrics | None = None
        self._org: tuple[int, OrgChart] | None = None
        self._rules: ActiveRules | None = None
        self._warned_years: set[int] = set()
        self._warned_skips: set[str] = set()

    def bind(self, runtime: Runtime) -> None:
        """Register dispatch's metrics on the running service's registry."""
        super().bind(runtime)
        self.bind_metrics(runtime.metrics.registry)

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        """Register dispatch's metrics on ``registry`` (a runtime's, or a test's own)."""
        self.metrics = DispatchMetrics(registry)
        self.update_calendar_gauge()

    async def start(self) -> None:
        """Load the packaged organisation and rules into an empty database."""
        if self.settings.load_organisation_on_startup:
            async with self.sessions() as session, session.begin():
                await organisation.load(
                    session, outbox=self.outbox, profiles=self.profiles, now=self.now()
                )

    # ---- organisation and rules, cached by their revision in the database -------------------

    async def organisation(self, session: AsyncSession) -> OrgChart:
        """The active org chart as the database holds it now."""
        revision = await organisation.current_revision(session)
        if self._org is None or self._org[0] != revision:
            tree = self._org[1].tree if self._org is not None else None
            org = await organisation.build_org(session, tree=tree)
            self._org = (revision, org)
        return self._org[1]

    async def active_rules(self, session: AsyncSession) -> ActiveRules:
        """The active routing rules (the newest rule set), validated against the current org."""
        newest = (await session.execute(select(func.max(RuleSetRow.id)))).scalar_one_or_none()
        if newest is None:
            raise LookupError("no routing rules are loaded; run `fengqiao dispatch load-org`")
        org = await self.organisation(session)
        cached = self._rules
        if cached is None or cached.id != newest:
            row = await session.get(RuleSetRow, newest)
            assert row is not None and row.id is not None
            rules = load_rules(row.text, org=org, profiles=self.profiles)
            cached = ActiveRules(row.id, rules, row.text, row.activated_at, row.activated_by)
            self._rules = cached
        return cached

    # ---- time limits --------------------------------------------------------------------------

    def deadlines(self, profile: Profile, start: datetime) -> dict[ClockName, datetime]:
        """Every clock of a profile started at ``start``; counts a calendar fallback."""
        with self.calendar.observe() as fallback:
            due = deadlines(profile, start, calendar=self.calendar)
        self._note_fallback(fallback, what=f"profile {profile.code}")
        return due

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
                    "calendar fallback: %s counts %d day(s) of %d as Monday–Friday working days; "
                    "chinesecalendar has no data for %d and the overrides file (version %s) does "
                    "not complete it — enter the State Council's %d schedule in the calendar "
                    "overrides (see docs/dispatch.md)",
                    what,
                    sum(1 for d in days if d.year == year),
                    year,
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
        today = self.now().date()
        end = date(self.calendar.covered_through(), 12, 31)
        self.metrics.calendar_days_left.set((end - today).days)
