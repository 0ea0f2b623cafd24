"""The whole suite, four services in this process, each on its own loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.dispatch.app import create_app as dispatch_app
from services.dispatch.settings import DispatchSettings
from services.evaluation.app import create_app as evaluation_app
from services.evaluation.settings import EvaluationSettings
from services.intake.app import create_app as intake_app
from services.intake.settings import IntakeSettings
from services.mediation.app import create_app as mediation_app
from services.mediation.settings import MediationSettings
from shared.bus import create_topics
from shared.settings import BusSettings
from tests.support import Database, RunningService, bus_settings, make_settings, serve

APPS: dict[str, tuple[Callable[..., Any], type]] = {
    "intake": (intake_app, IntakeSettings),
    "dispatch": (dispatch_app, DispatchSettings),
    "mediation": (mediation_app, MediationSettings),
    "evaluation": (evaluation_app, EvaluationSettings),
}


# The tests' load comes from one address, which intake's per-client rate limit would throttle;
# the limit has its own tests (tests/integration/intake).
OWN_DEFAULTS: dict[str, dict[str, Any]] = {"intake": {"public_rate_limit": ""}}


@contextlib.asynccontextmanager
async def run_suite(
    *, bootstrap: str, database: Database, prefix: str, **extra: Any
) -> AsyncIterator[dict[str, RunningService]]:
    """Migrate and start all four services; yield them by name; stop them in reverse."""
    await create_topics(BusSettings(**bus_settings(bootstrap, prefix)))
    async with contextlib.AsyncExitStack() as stack:
        running: dict[str, RunningService] = {}
        for name, (factory, settings_cls) in APPS.items():
            settings = await make_settings(
                settings_cls,
                service=name,
                database=database,
                bootstrap=bootstrap,
                prefix=prefix,
                **{**OWN_DEFAULTS.get(name, {}), **extra},
            )
            running[name] = await stack.enter_async_context(serve(name, factory(settings)))
        yield running


@pytest.fixture
def suite() -> Callable[..., Any]:
    return run_suite
