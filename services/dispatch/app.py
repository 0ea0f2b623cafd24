"""Dispatch: the grid whistles, departments report — routing, deadlines, escalation."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.api import router
from services.dispatch.handlers import EVENT_HANDLERS
from services.dispatch.models import metadata
from services.dispatch.seed import seed_organisation
from services.dispatch.settings import DispatchSettings
from shared.events import INTAKE_TOPIC, MEDIATION_TOPIC
from shared.runtime import Runtime, ServiceSpec, create_service_app


async def _startup(runtime: Runtime) -> None:
    async with runtime.sessions() as session, session.begin():
        await seed_organisation(session)


SPEC = ServiceSpec(
    name="dispatch",
    title="Fengqiao dispatch",
    description="Routes tickets to the responsible department and keeps their clocks.",
    metadata=metadata,
    consumes=(INTAKE_TOPIC, MEDIATION_TOPIC),
    handlers=EVENT_HANDLERS,
    routers=[router],
    on_startup=_startup,
)


def create_app(settings: DispatchSettings | None = None) -> FastAPI:
    """The dispatch ASGI app."""
    return create_service_app(SPEC, settings or DispatchSettings())
