"""Every service of the suite, declared once: its settings, app factory, migrations, commands.

Adding a service is one ``ServiceEntry`` here (plus its package under ``services/``): the CLI,
the supervisor, the migrations and the tests find it through this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer

from services.dispatch.settings import DispatchSettings
from services.evaluation.settings import EvaluationSettings
from services.intake.settings import IntakeSettings
from services.mediation.settings import MediationSettings
from shared import migrate
from shared.settings import ServiceSettings


@dataclass(frozen=True)
class ServiceEntry:
    """How the suite runs one service."""

    name: str
    settings: type[ServiceSettings]
    # ``module:function`` of the app factory, for ``uvicorn --factory``.
    app: str
    # The package holding the service's Alembic history (``migrations/`` beside its models).
    migrations: str
    # ``module:attribute`` of the service's own ``typer`` commands, mounted as
    # ``fengqiao <name> ...``; None for a service without commands.
    commands: str | None = None

    def load_settings(self) -> ServiceSettings:
        """The service's settings, read from the environment."""
        return self.settings()

    def load_commands(self) -> typer.Typer | None:
        """The service's command group, imported on demand."""
        if self.commands is None:
            return None
        module, _, attribute = self.commands.partition(":")
        group = getattr(importlib.import_module(module), attribute)
        assert isinstance(group, typer.Typer), f"{self.commands} is not a typer app"
        return group


SERVICES: dict[str, ServiceEntry] = {
    entry.name: entry
    for entry in (
        ServiceEntry(
            name="intake",
            settings=IntakeSettings,
            app="services.intake.app:create_app",
            migrations="services.intake.migrations",
        ),
        ServiceEntry(
            name="dispatch",
            settings=DispatchSettings,
            app="services.dispatch.app:create_app",
            migrations="services.dispatch.migrations",
            commands="services.dispatch.cli:app",
        ),
        ServiceEntry(
            name="mediation",
            settings=MediationSettings,
            app="services.mediation.app:create_app",
            migrations="services.mediation.migrations",
        ),
        ServiceEntry(
            name="evaluation",
            settings=EvaluationSettings,
            app="services.evaluation.app:create_app",
            migrations="services.evaluation.migrations",
            commands="services.evaluation.cli:app",
        ),
    )
}


def entry(name: str) -> ServiceEntry:
    """The registered service ``name``, or a ``KeyError`` naming the known ones."""
    try:
        return SERVICES[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}; one of {', '.join(SERVICES)}") from None


def upgrade(name: str, settings: ServiceSettings | None = None) -> None:
    """Migrate service ``name``'s database to head (its settings from the environment if none)."""
    service = entry(name)
    migrate.upgrade(service.migrations, settings or service.load_settings())


async def upgrade_async(name: str, settings: ServiceSettings) -> None:
    """``upgrade`` for callers already inside an event loop (tests, the supervisor)."""
    await migrate.upgrade_async(entry(name).migrations, settings)
