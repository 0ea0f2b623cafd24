"""Dispatch: the grid whistles, departments report — routing, deadlines, escalation.

``create_app`` is the one wiring point: the context (clock, calendar, org chart, rules), the
event handlers bound to it, the organisation loaded into an empty database at start, the
scheduler loop, and the mapping of domain errors to HTTP answers.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.dispatch import organisation, scheduler
from services.dispatch.api import router
from services.dispatch.context import Clock, DispatchContext
from services.dispatch.errors import DispatchError, Invalid
from services.dispatch.handlers import event_handlers
from services.dispatch.models import metadata
from services.dispatch.service import StateConflict
from services.dispatch.settings import DispatchSettings
from services.dispatch.workflow import IllegalTransition
from shared.datafiles import DataFileError
from shared.events import INTAKE_TOPIC, MEDIATION_TOPIC
from shared.runtime import Runtime, ServiceSpec, create_service_app
from shared.workcalendar import CalendarRangeError

log = logging.getLogger(__name__)


def create_app(settings: DispatchSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The dispatch ASGI app; ``clock`` makes "now" injectable (tests, demos)."""
    settings = settings or DispatchSettings()
    ctx = DispatchContext(settings, clock=clock)

    async def startup(runtime: Runtime) -> None:
        ctx.bind_metrics(runtime.metrics.registry)
        runtime.extras["dispatch"] = ctx
        if settings.load_organisation_on_startup:
            async with runtime.sessions() as session, session.begin():
                await organisation.load(
                    session, outbox=ctx.outbox, profiles=ctx.profiles, now=ctx.now()
                )

    async def dispatch_scheduler(runtime: Runtime) -> None:
        await scheduler.run(ctx, runtime)

    spec = ServiceSpec(
        name="dispatch",
        title="Fengqiao dispatch",
        description="Routes tickets to the responsible department and keeps their clocks.",
        metadata=metadata,
        consumes=(INTAKE_TOPIC, MEDIATION_TOPIC),
        handlers=event_handlers(ctx),
        routers=[router],
        on_startup=startup,
        background=[dispatch_scheduler],
    )
    app = create_service_app(spec, settings)
    app.state.dispatch = ctx
    _error_handlers(app)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Domain errors → HTTP: 403/404/409/422 with a detail that names what is wrong."""

    @app.exception_handler(IllegalTransition)
    async def illegal(_request: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "current_status": exc.current.value, "action": exc.action.value},
            status_code=409,
        )

    @app.exception_handler(StateConflict)
    async def state_conflict(_request: Request, exc: StateConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "current_status": exc.current}, status_code=409)

    @app.exception_handler(CalendarRangeError)
    async def calendar_gap(_request: Request, exc: CalendarRangeError) -> JSONResponse:
        # ``beyond_data: raise``: a deadline this action needs lies past the calendar's data.
        return JSONResponse(
            {"detail": f"the working calendar cannot compute a deadline this needs: {exc}"},
            status_code=409,
        )

    @app.exception_handler(DataFileError)
    async def refused_file(_request: Request, exc: DataFileError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "problems": [_problem(p) for p in exc.problems]},
            status_code=422,
        )

    @app.exception_handler(DispatchError)
    async def domain(_request: Request, exc: DispatchError) -> JSONResponse:
        body: dict[str, object] = {"detail": str(exc)}
        if isinstance(exc, Invalid) and exc.problems:
            body["problems"] = [_problem(p) for p in exc.problems]
        return JSONResponse(body, status_code=exc.status_code)


def _problem(p: object) -> dict[str, object]:
    return {
        "entry": getattr(p, "entry", None),
        "field": getattr(p, "field", None),
        "message": getattr(p, "message", str(p)),
    }
