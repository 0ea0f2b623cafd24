"""Dispatch: the grid whistles, departments report — routing, deadlines, escalation.

``create_app`` is the one wiring point: the context (clock, calendar, org chart, rules), the
event handlers bound to it, the organisation loaded into an empty database at start, the
scheduler loop, and the table of domain errors to HTTP answers.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.api import router
from services.dispatch.context import DispatchContext
from services.dispatch.deadlines import scheduler
from services.dispatch.handlers import event_handlers
from services.dispatch.models import metadata
from services.dispatch.settings import DispatchSettings
from services.dispatch.workflow import IllegalTransition
from shared.clock import Clock
from shared.datafiles import DataFileError
from shared.events import CONSUMES
from shared.runtime import ServiceSpec, create_service_app
from shared.workcalendar import CalendarRangeError

# Domain errors → HTTP (NotFound 404, Forbidden 403, Conflict 409, Invalid 422 by default);
# each body names what is wrong.
ERROR_STATUS = {
    IllegalTransition: 409,
    # ``beyond_data: raise``: a deadline this action needs lies past the calendar's data.
    CalendarRangeError: 409,
    DataFileError: 422,
}


def create_app(settings: DispatchSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The dispatch ASGI app; ``clock`` makes "now" injectable (tests, demos)."""
    ctx = DispatchContext(settings or DispatchSettings(), clock=clock)
    spec = ServiceSpec(
        name="dispatch",
        title="Fengqiao dispatch",
        description="Routes tickets to the responsible department and keeps their clocks.",
        metadata=metadata,
        context=ctx,
        consumes=CONSUMES["dispatch"],
        handlers=event_handlers,
        errors=ERROR_STATUS,
        routers=[router],
        background=[scheduler.run],
    )
    return create_service_app(spec)
