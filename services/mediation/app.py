"""Mediation: dispute cases, sessions, agreements, court confirmation and follow-up."""

from __future__ import annotations

from fastapi import FastAPI

from services.mediation.api import router
from services.mediation.handlers import EVENT_HANDLERS
from services.mediation.models import metadata
from services.mediation.settings import MediationSettings
from shared.events import DISPATCH_TOPIC
from shared.runtime import ServiceSpec, create_service_app

SPEC = ServiceSpec(
    name="mediation",
    title="Fengqiao mediation",
    description="Tracks dispute cases from dispatch or walk-in to agreement and follow-up.",
    metadata=metadata,
    consumes=(DISPATCH_TOPIC,),
    handlers=EVENT_HANDLERS,
    routers=[router],
)


def create_app(settings: MediationSettings | None = None) -> FastAPI:
    """The mediation ASGI app."""
    return create_service_app(SPEC, settings or MediationSettings())
