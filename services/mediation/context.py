"""What every mediation operation needs besides a session: settings, the clock and the outbox."""

from __future__ import annotations

from services.mediation.models import outbox_table
from services.mediation.settings import MediationSettings
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import ServiceContext


class MediationContext(ServiceContext):
    """The running mediation service: built in ``app.create_app``, bound at start."""

    settings: MediationSettings

    def __init__(self, settings: MediationSettings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, outbox=Outbox(outbox_table), clock=clock)
