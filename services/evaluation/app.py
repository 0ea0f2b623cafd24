"""Evaluation: satisfaction, resolution and the other rates the city committee reviews.

``create_app`` is the one wiring point (the same shape in every service): the context, the spec
that declares topics, handlers, routes and the error table, and ``create_service_app``.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.evaluation import gauges
from services.evaluation.api import router
from services.evaluation.context import EvaluationContext
from services.evaluation.dashboard import router as dashboard_router
from services.evaluation.handlers import event_handlers
from services.evaluation.models import metadata
from services.evaluation.settings import EvaluationSettings
from shared.clock import Clock
from shared.events import CONSUMES
from shared.runtime import ServiceSpec, create_service_app


def create_app(
    settings: EvaluationSettings | None = None, *, clock: Clock | None = None
) -> FastAPI:
    """The evaluation ASGI app; ``clock`` makes "now" injectable (tests, demos)."""
    ctx = EvaluationContext(settings or EvaluationSettings(), clock=clock)
    spec = ServiceSpec(
        name="evaluation",
        title="Fengqiao evaluation",
        description="Rates, rankings and trends for the city committee, from the event stream.",
        metadata=metadata,
        context=ctx,
        consumes=CONSUMES["evaluation"],
        handlers=event_handlers,
        routers=[router, dashboard_router],
        background=[gauges.loop],
    )
    return create_service_app(spec)
