"""What every evaluation operation needs besides a session: settings, the clock, the calendar."""

from __future__ import annotations

from services.evaluation.gauges import Gauges
from services.evaluation.models import outbox_table
from services.evaluation.settings import EvaluationSettings
from shared import heap
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import Runtime, ServiceContext
from shared.workcalendar import OperationalCalendar, build_calendar, load_overrides_file


def evaluation_calendar(settings: EvaluationSettings) -> OperationalCalendar:
    """Dispatch's calendar (the same overrides file, so the same days): handling time in
    working days agrees with the deadlines dispatch computed."""
    return build_calendar(load_overrides_file(settings.calendar_file))


class EvaluationContext(ServiceContext):
    """The running evaluation service: built in ``app.create_app``, bound at start."""

    settings: EvaluationSettings

    def __init__(self, settings: EvaluationSettings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, outbox=Outbox(outbox_table), clock=clock)
        self.calendar = evaluation_calendar(settings)
        self._gauges: Gauges | None = None

    def bind(self, runtime: Runtime) -> None:
        super().bind(runtime)
        self._gauges = Gauges(runtime.metrics.registry)

    async def start(self) -> None:
        await super().start()
        heap.settle()

    @property
    def gauges(self) -> Gauges:
        if self._gauges is None:
            raise RuntimeError("the evaluation context is not bound yet")
        return self._gauges
