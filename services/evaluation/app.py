"""Evaluation: satisfaction, resolution and the other rates the city committee reviews."""

from __future__ import annotations

from fastapi import FastAPI

from services.evaluation.api import router
from services.evaluation.handlers import EVENT_HANDLERS
from services.evaluation.models import metadata
from services.evaluation.settings import EvaluationSettings
from shared.events import DISPATCH_TOPIC, INTAKE_TOPIC, MEDIATION_TOPIC
from shared.runtime import ServiceSpec, create_service_app

SPEC = ServiceSpec(
    name="evaluation",
    title="Fengqiao evaluation",
    description="Projections of the event stream: rates, rankings and trends for the committee.",
    metadata=metadata,
    consumes=(INTAKE_TOPIC, DISPATCH_TOPIC, MEDIATION_TOPIC),
    handlers=EVENT_HANDLERS,
    routers=[router],
)


def create_app(settings: EvaluationSettings | None = None) -> FastAPI:
    """The evaluation ASGI app."""
    return create_service_app(SPEC, settings or EvaluationSettings())
