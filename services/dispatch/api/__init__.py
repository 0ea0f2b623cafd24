"""Dispatch's HTTP routes, grouped like the domain: the organisation, routing, reading
dispatches, the workflow (one route per row of ``actions.SIMPLE_ACTIONS``, plus the actions with
their own module) and the whistle. Each route body is a line or two: validate (FastAPI), call
one service or query function in one transaction, answer; ``app.py`` maps domain errors."""

from __future__ import annotations

from fastapi import APIRouter

from services.dispatch.api import dispatches, organisation, routing, whistle, workflow

router = APIRouter()
for module in (organisation, routing, dispatches, workflow, whistle):
    router.include_router(module.router)
