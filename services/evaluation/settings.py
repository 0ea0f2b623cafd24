"""Evaluation's settings (environment prefix ``EVALUATION_``)."""

from __future__ import annotations

from typing import ClassVar

from shared.settings import ServiceSettings, service_settings_config


class EvaluationSettings(ServiceSettings):
    service_name: ClassVar[str] = "evaluation"
    model_config = service_settings_config("EVALUATION_")

    database_url: str = "sqlite+aiosqlite:///./var/evaluation.db"
