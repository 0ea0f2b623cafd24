"""Mediation's settings (environment prefix ``MEDIATION_``)."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import ServiceSettings, service_settings_config


class MediationSettings(ServiceSettings):
    service_name: ClassVar[str] = "mediation"
    model_config = service_settings_config("MEDIATION_")

    database_url: str = "sqlite+aiosqlite:///./var/mediation.db"
