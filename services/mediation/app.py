"""Mediation: dispute cases, sessions, agreements, court confirmation and follow-up.

``create_app`` is the one wiring point, the same in every service: the context, the spec that
declares topics, handlers, routes and the error table, and ``create_service_app`` around them.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.mediation.api import router
from services.mediation.context import MediationContext
from services.mediation.handlers import event_handlers
from services.mediation.models import metadata
from services.mediation.settings import MediationSettings
from shared.clock import Clock
from shared.events import DISPATCH_TOPIC
from shared.runtime import ServiceSpec, create_service_app


def create_app(settings: MediationSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The mediation ASGI app; ``clock`` makes "now" injectable (tests, demos)."""
    ctx = MediationContext(settings or MediationSettings(), clock=clock)
    spec = ServiceSpec(
        name="mediation",
        title="Fengqiao mediation",
        description="Tracks dispute cases from dispatch or walk-in to agreement and follow-up.",
        metadata=metadata,
        context=ctx,
        consumes=(DISPATCH_TOPIC,),
        handlers=event_handlers,
        routers=[router],
    )
    return create_service_app(spec)
