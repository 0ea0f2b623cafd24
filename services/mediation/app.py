"""Mediation: dispute cases, sessions, agreements, court confirmation, follow-up and the board.

``create_app`` is the one wiring point, the same in every service: the context, the spec that
declares topics, handlers, routes, the escalation loop and the error table, and
``create_service_app`` around them.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.mediation import scheduler
from services.mediation.api import router
from services.mediation.context import MediationContext
from services.mediation.handlers import event_handlers
from services.mediation.lifecycle import IllegalTransition
from services.mediation.models import metadata
from services.mediation.settings import MediationSettings
from shared.clock import Clock
from shared.events import CONSUMES
from shared.runtime import ServiceSpec, create_service_app
from shared.workcalendar import CalendarRangeError

# Domain errors → HTTP (NotFound 404, Forbidden 403, Conflict 409, Invalid 422 by default);
# each body names what is wrong.
ERROR_STATUS = {
    IllegalTransition: 409,
    CalendarRangeError: 409,  # a deadline lies past the working calendar's data
}


def create_app(settings: MediationSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The mediation ASGI app; ``clock`` makes "now" injectable (tests, demos)."""
    ctx = MediationContext(settings or MediationSettings(), clock=clock)
    spec = ServiceSpec(
        name="mediation",
        title="Fengqiao mediation",
        description="Mediation cases from dispatch or walk-in to agreement, follow-up and board.",
        metadata=metadata,
        context=ctx,
        consumes=CONSUMES["mediation"],
        handlers=event_handlers,
        errors=ERROR_STATUS,
        routers=[router],
        background=[scheduler.run],
    )
    return create_service_app(spec)
