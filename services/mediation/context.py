"""What every mediation operation needs besides a session: settings, the clock, the working
calendar (the same one every service counts days with) and the outbox."""

from __future__ import annotations

from datetime import date, datetime

from prometheus_client import CollectorRegistry, Counter

from services.mediation.models import outbox_table
from services.mediation.settings import MediationSettings
from shared import heap
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import Runtime, ServiceContext
from shared.workcalendar import (
    OperationalCalendar,
    add_working_days,
    build_calendar,
    load_overrides_file,
    nth_working_day_after,
)


class MediationMetrics:
    """Mediation's own Prometheus metrics, beside the runtime's HTTP and bus ones."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refusals = Counter(
            "fengqiao_mediation_refusals_total",
            "Requests refused by a mediation rule: conflict_of_interest, double_booking, "
            "unavailable (outside the mediator's weekly availability).",
            ["rule"],
            registry=registry,
        )
        self.loop_moves = Counter(
            "fengqiao_mediation_loop_moves_total",
            "What the background loop did: escalated (over a level's time limit), posted (open "
            "too long, put on the backlog board).",
            ["move"],
            registry=registry,
        )
        self.loop_errors = Counter(
            "fengqiao_mediation_loop_errors_total",
            "Background loop passes that failed (retried on the next pass).",
            registry=registry,
        )


class MediationContext(ServiceContext):
    """The running mediation service: built in ``app.create_app``, bound at start."""

    settings: MediationSettings

    def __init__(
        self,
        settings: MediationSettings,
        *,
        clock: Clock | None = None,
        calendar: OperationalCalendar | None = None,
    ) -> None:
        super().__init__(settings, outbox=Outbox(outbox_table), clock=clock)
        self.calendar = calendar or build_calendar(load_overrides_file(settings.calendar_file))
        self.metrics: MediationMetrics | None = None

    def bind(self, runtime: Runtime) -> None:
        """Register mediation's metrics on the running service's registry."""
        super().bind(runtime)
        self.metrics = MediationMetrics(runtime.metrics.registry)

    async def start(self) -> None:
        """Settle the collector before the first fetch (``shared.heap``)."""
        heap.settle()

    def refused(self, rule: str) -> None:
        """Count a request a mediation rule refused."""
        if self.metrics is not None:
            self.metrics.refusals.labels(rule).inc()

    def working_days_from(self, start: datetime, days: int) -> datetime:
        """The same wall-clock time ``days`` working days after ``start``."""
        return add_working_days(start, days, calendar=self.calendar)

    def working_day_after(self, day: date, days: int) -> date:
        """The ``days``-th working day after ``day``."""
        return nth_working_day_after(day, days, calendar=self.calendar)
