"""Intake: many inlets, one outlet — every channel's appeal becomes one canonical ticket event."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.api import router
from services.intake.ids import TicketIdAllocator
from services.intake.models import metadata
from services.intake.settings import IntakeSettings
from shared.runtime import Runtime, ServiceSpec, create_service_app


async def _startup(runtime: Runtime) -> None:
    runtime.extras["ids"] = TicketIdAllocator(runtime.engine)


SPEC = ServiceSpec(
    name="intake",
    title="Fengqiao intake",
    description="Normalizes the city's appeal channels into one canonical ticket event.",
    metadata=metadata,
    group_commit=True,
    routers=[router],
    on_startup=_startup,
)


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    """The intake ASGI app (``uvicorn --factory services.intake.app:create_app``)."""
    return create_service_app(SPEC, settings or IntakeSettings())
