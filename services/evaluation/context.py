"""What every evaluation operation needs besides a session: settings, the clock, the calendar."""

from __future__ import annotations

import gc

from services.evaluation.gauges import Gauges
from services.evaluation.models import outbox_table
from services.evaluation.settings import EvaluationSettings
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import Runtime, ServiceContext
from shared.workcalendar import OperationalCalendar, build_calendar, load_overrides_file


def evaluation_calendar(settings: EvaluationSettings) -> OperationalCalendar:
    """Dispatch's calendar (the same overrides file, so the same days): handling time in
    working days agrees with the deadlines dispatch computed."""
    return build_calendar(load_overrides_file(settings.calendar_file))


_settled = False

YOUNG_THRESHOLD = 100_000
"""Allocations between two young collections (Python's default: 700)."""


def tune_collector() -> None:
    """Collect the young generation every ``YOUNG_THRESHOLD`` allocations instead of 700: a
    fetch of 500 events allocates hundreds of thousands of short-lived objects (decoded events,
    folds, parts, cell rows), and at the default the collector's passes — the full ones over
    the events and cells this process remembers above all — were ~20 % of the apply's Python
    CPU (0.046 of 0.204 ms an event; 0.163 → 0.141 ms with this threshold, as intake's)."""
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)


def settle_heap() -> None:
    """Once per process, after start-up: move everything alive (modules, schemas, the area
    tree, the calendar) out of the cyclic collector's reach. Its full passes over that heap
    stalled committee answers: at 10 M facts a 5 ms answer's p99 was 40–140 ms and a department
    slice's ~300 ms; with the start-up heap frozen, 8 ms and 65 ms (``make bench-evaluation``).
    Objects made afterwards are collected, less often (``tune_collector``)."""
    global _settled
    if not _settled:
        _settled = True
        gc.collect()
        gc.freeze()
        tune_collector()


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
        settle_heap()

    @property
    def gauges(self) -> Gauges:
        if self._gauges is None:
            raise RuntimeError("the evaluation context is not bound yet")
        return self._gauges
