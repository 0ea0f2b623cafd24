"""Intake's settings (environment prefix ``INTAKE_``)."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import ServiceSettings, service_settings_config


class IntakeSettings(ServiceSettings):
    service_name: ClassVar[str] = "intake"
    model_config = service_settings_config("INTAKE_")

    database_url: str = "sqlite+aiosqlite:///./var/intake.db"
    citizen_hash_salt: str = "fengqiao-dev-salt"
    repeat_window_days: int = 30
    max_body_bytes: int = 16 << 20  # batch files (CSV / XLSX) and e-mails with attachments
    group_commit: bool = True
