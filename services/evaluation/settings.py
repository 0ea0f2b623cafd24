"""Evaluation's settings (environment prefix ``EVALUATION_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import model_validator

from shared.settings import ServiceSettings, service_settings_config

BACKLOG_BATCH_MAX_RECORDS = 2000
"""Evaluation's fetches on PostgreSQL, unless ``EVALUATION_CONSUMER_BATCH_MAX_RECORDS`` says."""

GATHER_FETCH_MIN_BYTES = 1 << 20
"""The bytes evaluation's fetches wait for, on either database (up to
``consumer_fetch_max_wait_ms``), unless ``EVALUATION_CONSUMER_FETCH_MIN_BYTES`` says."""

GATHER_FETCH_MAX_WAIT_MS = 1000
"""How long evaluation's fetches on PostgreSQL wait, unless
``EVALUATION_CONSUMER_FETCH_MAX_WAIT_MS`` says."""


class EvaluationSettings(ServiceSettings):
    service_name: ClassVar[str] = "evaluation"
    model_config = service_settings_config("EVALUATION_")

    database_url: str = "sqlite+aiosqlite:///./var/evaluation.db"
    # The live apply moves cells at random keys of a table that grows by several rows a ticket:
    # with SQLite's 2 MiB most of those pages were read from the OS again at every fetch.
    sqlite_cache_mib: int | None = 64
    # The calendar overrides file dispatch uses (the packaged one when unset), so handling
    # days count the same days dispatch's deadlines do.
    calendar_file: Path | None = None
    # w in the satisfaction rate: satisfied + w × basically satisfied, over counted callbacks.
    basic_satisfaction_weight: float = 0.8
    # Ranking: the weights version (services/evaluation/data/weights.yaml), the minimum sample
    # under which a unit is "insufficient data", and the red / yellow lists.
    weights_version: str | None = None  # None: the newest version in the file
    ranking_min_sample: int = 30
    red_bottom_n: int = 3
    red_below: float | None = None
    yellow_bottom_n: int = 3
    yellow_below: float | None = None
    # Prometheus: how often the gauges are refreshed, and at most how many departments carry
    # their own label (the busiest; the rest are not exported).
    gauges_interval_s: float = 60.0
    gauges_max_departments: int = 50
    # Hot spots: the significance of the Poisson test and the smallest count worth a flag.
    hotspot_alpha: float = 0.01
    hotspot_min_count: int = 5
    recurring_min_count: int = 5

    @model_validator(mode="after")
    def _gathered_fetches(self) -> Self:
        """Unless set: on PostgreSQL a fetch holds up to ``BACKLOG_BATCH_MAX_RECORDS`` records,
        not 500 — only a backlog fills one (the broker hands out what it holds), and there a
        fetch of 2,000 cost 0.135 + 0.100 ms of CPU an event (process + backends) against
        0.168 + 0.143 at 500, medians of three drains each; and on either database a fetch
        waits for ``GATHER_FETCH_MIN_BYTES`` (1 MiB), not the suite's 64 KiB, up to
        ``consumer_fetch_max_wait_ms`` (500 ms; on PostgreSQL 1 s, below) — a fetch's staging
        and write cost evaluation's backends a part that does not shrink with the fetch, and in
        the suite's steady state fetches of 64 KiB held a few dozen events
        (docs/benchmarks.md). The committee's figures
        come at most that wait later; nothing it reads is promised fresher. SQLite keeps 500
        records at most: one writer, its lock held the whole fetch; there the wait for 1 MiB
        cut evaluation's CPU a ticket in the suite as well (docs/benchmarks.md).

        On PostgreSQL a fetch waits ``GATHER_FETCH_MAX_WAIT_MS`` (1 s), not 500 ms: the embedded
        broker answers a fetch at the end of its wait, so a fetch holds what came in one wait,
        and a ticket whose receipt comes in the last part of a wait — as long as dispatch's hop
        from the receipt to the assignment — has its assignment in the next fetch. Such a ticket
        is folded and written twice, its cells created under no department, then moved to its
        department's and the emptied ones deleted: 30 % of the suite's tickets at 500 ms, 23 %
        at 1 s (medians of the suite runs measured), and every fetch's fixed cost and the coarse
        cells' moves spread over twice the tickets: evaluation's CPU a ticket ×0.71–0.91 in
        five pairs (docs/benchmarks.md). The committee's figures come at most that wait later."""
        if "consumer_fetch_min_bytes" not in self.model_fields_set:
            self.consumer_fetch_min_bytes = GATHER_FETCH_MIN_BYTES
        if self.is_sqlite:
            return self
        if "consumer_batch_max_records" not in self.model_fields_set:
            self.consumer_batch_max_records = BACKLOG_BATCH_MAX_RECORDS
        if "consumer_fetch_max_wait_ms" not in self.model_fields_set:
            self.consumer_fetch_max_wait_ms = GATHER_FETCH_MAX_WAIT_MS
        return self
