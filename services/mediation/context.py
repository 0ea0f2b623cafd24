"""What every mediation operation needs besides a session: settings, the clock, the working
calendar (the same one every service counts days with) and the outbox."""

from __future__ import annotations

from datetime import date, datetime

from services.mediation.models import outbox_table
from services.mediation.settings import MediationSettings
from shared.clock import Clock
from shared.outbox import Outbox
from shared.runtime import ServiceContext
from shared.workcalendar import (
    OperationalCalendar,
    add_working_days,
    build_calendar,
    load_overrides_file,
    nth_working_day_after,
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

    def working_days_from(self, start: datetime, days: int) -> datetime:
        """The same wall-clock time ``days`` working days after ``start``."""
        return add_working_days(start, days, calendar=self.calendar)

    def working_day_after(self, day: date, days: int) -> date:
        """The ``days``-th working day after ``day``."""
        return nth_working_day_after(day, days, calendar=self.calendar)
