"""Intake's settings (environment prefix ``INTAKE_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from services.intake.ratelimit import parse_limits
from shared.settings import ServiceSettings, service_settings_config

DEV_CITIZEN_HASH_SALT = "fengqiao-dev-salt"


class IntakeSettings(ServiceSettings):
    service_name: ClassVar[str] = "intake"
    model_config = service_settings_config("INTAKE_")

    database_url: str = "sqlite+aiosqlite:///./var/intake.db"
    citizen_hash_salt: str = Field(DEV_CITIZEN_HASH_SALT, min_length=8)

    # Repeat appeals: same citizen, or same place and near-identical text, within the window.
    # Off, nothing is linked (a bulk import of history, or to measure what detection costs).
    repeat_detection: bool = True
    repeat_window_days: int = Field(30, ge=1)
    repeat_text_similarity: float = Field(0.6, gt=0, le=1)
    repeat_place_radius_m: float = Field(100.0, gt=0)
    # How many of the latest tickets per citizen / grid / address are compared with a new one.
    repeat_candidates_per_key: int = Field(5, ge=1, le=100)

    # The global body limit (the middleware's 413) is the largest route's; routes set their own.
    max_body_bytes: int = 16 << 20
    ticket_max_bytes: int = 256 << 10  # one appeal: JSON, form, SMS or Open311
    mail_max_bytes: int = 16 << 20  # one e-mail with its attachments
    attachment_max_bytes: int = 10 << 20  # each attachment of an e-mail
    batch_max_bytes: int = 16 << 20  # one CSV / XLSX file
    batch_max_rows: int = Field(5000, ge=1)
    # A workbook is a zip: a few kilobytes can unzip into gigabytes of sheet. Both are checked
    # before the workbook is parsed (a real 5,000-row file unzips to a few megabytes).
    batch_max_unzipped_bytes: int = Field(128 << 20, ge=1)
    batch_max_cells: int = Field(1_000_000, ge=1)  # 5,000 rows of 200 columns

    # Open311's public GET lists the tickets of the Open311-format channels only, unless this
    # is set: other channels' appeals (petitions, mailboxes) are not for the public.
    open311_all_channels: bool = False
    open311_max_results: int = 1000
    group_commit: bool = True

    # Per-client limits on the public routes (posting appeals and callbacks, Open311), in the
    # ``limits`` notation ("100/second;3000/minute"), counted per process; empty: no limit. A
    # client is its authenticated subject, else its address (behind a proxy, run uvicorn with
    # --proxy-headers and --forwarded-allow-ips so the address is the caller's).
    public_rate_limit: str = "100/second;3000/minute"

    @field_validator("public_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        parse_limits(value)
        return value

    def production_problems(self) -> list[str]:
        """A deployment's citizen hashes must not be computable by anyone with this repository."""
        problems = super().production_problems()
        if self.citizen_hash_salt == DEV_CITIZEN_HASH_SALT:
            problems.append(
                "INTAKE_CITIZEN_HASH_SALT is the development default: set a secret salt of your "
                "own (it keys the citizen hashes every service sees)"
            )
        return problems
