"""Dispatch's settings (environment prefix ``DISPATCH_``)."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import ServiceSettings, service_settings_config


class DispatchSettings(ServiceSettings):
    service_name: ClassVar[str] = "dispatch"
    model_config = service_settings_config("DISPATCH_")

    database_url: str = "sqlite+aiosqlite:///./var/dispatch.db"
