"""What every evaluation operation needs besides a session: settings and the clock."""

from __future__ import annotations

from services.evaluation.models import outbox_table
from services.evaluation.settings import EvaluationSettings
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import ServiceContext


class EvaluationContext(ServiceContext):
    """The running evaluation service: built in ``app.create_app``, bound at start."""

    settings: EvaluationSettings

    def __init__(self, settings: EvaluationSettings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, outbox=Outbox(outbox_table), clock=clock)
