"""Dispatch's settings (environment prefix ``DISPATCH_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings, service_settings_config


class DispatchSettings(ServiceSettings):
    service_name: ClassVar[str] = "dispatch"
    model_config = service_settings_config("DISPATCH_")

    database_url: str = "sqlite+aiosqlite:///./var/dispatch.db"
    # Received -> dispatched runs through this consumer's fetches: a fetch that finds nothing
    # waits at most 100 ms (measured: p50 25 ms, max 51 ms from a record's publication to its
    # delivery; at the 500 ms default p50 130 ms, max 252 ms), for ~10 ms of CPU a second idle.
    consumer_fetch_max_wait_ms: int = Field(100, ge=1)

    # How often the scheduler looks for missed clocks and expired grab windows. State lives in
    # the database, so the interval only bounds how late an escalation can be noticed.
    scheduler_interval_ms: int = Field(1000, ge=10)
    scheduler_batch_size: int = Field(200, ge=1)
    # How long a pooled ticket waits to be grabbed (抢着办) before it is assigned and supervised.
    grab_window_minutes: float = Field(30.0, gt=0)
    # An operator's calendar overrides file; the packaged data/calendar.yaml when unset.
    calendar_file: Path | None = None
    # Load the demo city, its org chart and the packaged rules into an empty database at start.
    load_organisation_on_startup: bool = True
    whistle_max_summons: int = Field(30, ge=1)
