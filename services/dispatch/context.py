"""What every dispatch operation needs besides a session, in named parts: the organisation and
rules in force (``org``), the deadline arithmetic on the working calendar (``deadlines``), the
time-limit profiles, and metrics.

One ``DispatchContext`` is built per app in ``app.create_app``; tests pass a ``ManualClock`` to
make "now" theirs to move, so clocks, escalations and grab windows never need a sleep.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.dispatch.deadlines.profiles import ProfileSet, default_profiles
from services.dispatch.deadlines.timing import Deadlines
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.models import outbox_table
from services.dispatch.organisation import store
from services.dispatch.organisation.cache import OrgCache
from services.dispatch.settings import DispatchSettings
from shared import heap
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import Runtime, ServiceContext
from shared.workcalendar import OperationalCalendar, build_calendar, load_overrides_file


class DispatchContext(ServiceContext):
    """Settings, clock and outbox, plus the org cache, the deadlines and the metrics."""

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
        self.profiles = profiles or default_profiles()
        self.org = OrgCache(self.profiles)
        self.deadlines = Deadlines(
            calendar or build_calendar(load_overrides_file(settings.calendar_file)),
            clock=self.clock,
        )
        self.metrics: DispatchMetrics | None = None

    def bind(self, runtime: Runtime) -> None:
        """Register dispatch's metrics on the running service's registry."""
        super().bind(runtime)
        self.bind_metrics(runtime.metrics.registry)

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        """Register dispatch's metrics on ``registry`` (a runtime's, or a test's own)."""
        self.metrics = DispatchMetrics(registry)
        self.deadlines.metrics = self.metrics
        self.deadlines.update_calendar_gauge()

    async def start(self) -> None:
        """Load the packaged organisation and rules into an empty database; settle the
        collector before the first fetch (``shared.heap``)."""
        if self.settings.load_organisation_on_startup:
            async with self.sessions() as session, session.begin():
                await store.load(
                    session, outbox=self.outbox, profiles=self.profiles, now=self.now()
                )
        heap.settle()
