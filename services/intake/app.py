"""Intake: many inlets, one outlet — every channel's appeal becomes one canonical ticket event.

``create_app`` is the one wiring point: the context (pipeline, id allocator, repeat look-ups)
bound to the runtime at start, the handlers that follow tickets through dispatch and mediation,
the routes (tickets, channels, callbacks, Open311), and the table of domain errors to HTTP.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.intake import open311
from services.intake.api import router
from services.intake.bodies import BodyTooLarge, UnsupportedMediaType
from services.intake.channels import UnknownChannel
from services.intake.context import IntakeContext
from services.intake.errors import BadCursor, ChannelClosed, PayloadError, TicketNotFound
from services.intake.fastpath import TicketApp
from services.intake.handlers import event_handlers
from services.intake.models import metadata
from services.intake.ratelimit import RateLimited
from services.intake.settings import IntakeSettings
from shared.clock import Clock
from shared.events import CONSUMES
from shared.runtime import ServiceSpec, create_service_app

# Domain errors → HTTP, each naming the field (or row) at fault in its body.
ERROR_STATUS = {
    PayloadError: 422,
    BadCursor: 422,
    UnknownChannel: 404,
    TicketNotFound: 404,
    ChannelClosed: 410,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
}


def create_app(settings: IntakeSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The intake ASGI app (``uvicorn --factory services.intake.app:create_app``)."""
    ctx = IntakeContext(settings or IntakeSettings(), clock=clock)
    spec = ServiceSpec(
        name="intake",
        title="Fengqiao intake",
        description="Normalizes the city's appeal channels into one canonical ticket event.",
        metadata=metadata,
        context=ctx,
        consumes=CONSUMES["intake"],
        handlers=event_handlers,
        errors=ERROR_STATUS,
        group_commit=True,
        routers=[router, open311.router],
        # In front of the whole app: the hot route's requests skip the routing and middlewares
        # they do not need.
        app_class=TicketApp,
    )
    return create_service_app(spec)
