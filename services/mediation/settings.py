"""Mediation's settings (environment prefix ``MEDIATION_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared.events.mediation import Level
from shared.settings import ServiceSettings, service_settings_config

_LIMITS: dict[Level, int] = {"village": 7, "town": 15, "district": 20, "city": 30}


class MediationSettings(ServiceSettings):
    service_name: ClassVar[str] = "mediation"
    model_config = service_settings_config("MEDIATION_")

    database_url: str = "sqlite+aiosqlite:///./var/mediation.db"
    # The operators' working-calendar overrides (shared/workcalendar.py); None: the packaged one.
    calendar_file: Path | None = None
    # Working days a level may hold a case before it goes up (小事不出村、大事不出镇): a village
    # room that cannot settle a dispute in time hands it on rather than sitting on it.
    level_time_limits: dict[Level, int] = Field(default_factory=lambda: dict(_LIMITS))
    # A failed mediation below this level goes up instead of out of mediation.
    escalate_failed_below: Level = "city"
    # The backlog board: a case open this many working days, or breached this many times, or a
    # ticket re-routed this many times, is posted for an official to claim.
    board_open_working_days: int = Field(40, ge=1)
    board_breaches: int = Field(2, ge=1)
    board_reroutes: int = Field(3, ge=1)
    board_claim_working_days: int = Field(20, ge=1)  # the deadline a claim runs to
    # The first follow-up visit after an agreement, in working days.
    follow_up_working_days: int = Field(5, ge=0)
    # How often the escalation loop looks for overdue cases; state lives in the database.
    escalation_interval_ms: int = Field(1000, ge=10)
    escalation_batch_size: int = Field(200, ge=1)
