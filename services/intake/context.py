"""What every intake operation needs: settings, the pipeline, the write path and metrics.

One ``IntakeContext`` is built per app in ``app.create_app`` and bound to the runtime at start-up
(the group committer exists only once the runtime runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.ids import TicketIdAllocator
from services.intake.pipeline import Pipeline
from services.intake.ratelimit import ClientLimiter
from services.intake.repeat_lookup import CandidateLoader, policy_from
from services.intake.settings import IntakeSettings
from shared.db import GroupCommitter
from shared.outbox import Outbox
from shared.runtime import Runtime


@dataclass
class IntakeMetrics:
    """Intake's own counters, on the service's registry."""

    tickets: Counter
    rows_rejected: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> IntakeMetrics:
        return cls(
            tickets=Counter(
                "fengqiao_intake_tickets_total",
                "Appeals accepted by channel and outcome (created, existing, repeat).",
                ["channel", "outcome"],
                registry=registry,
            ),
            rows_rejected=Counter(
                "fengqiao_intake_rejected_total",
                "Batch-file rows refused as bad input, by channel.",
                ["channel"],
                registry=registry,
            ),
        )


@dataclass
class IntakeContext:
    """The running intake: bound to its runtime in the start-up hook."""

    settings: IntakeSettings
    runtime: Runtime | None = None
    pipeline: Pipeline | None = None
    metrics: IntakeMetrics | None = field(default=None)
    limiter: ClientLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = ClientLimiter(self.settings.public_rate_limit)

    def bind(self, runtime: Runtime) -> None:
        """Build the pipeline on the runtime's engines and register the metrics."""
        s = self.settings
        self.runtime = runtime
        loader = CandidateLoader(
            runtime.reader,
            policy=policy_from(
                window_days=s.repeat_window_days,
                text_similarity=s.repeat_text_similarity,
                place_radius_m=s.repeat_place_radius_m,
            ),
            per_key=s.repeat_candidates_per_key,
        )
        self.pipeline = Pipeline(
            salt=s.citizen_hash_salt,
            ids=TicketIdAllocator(runtime.engine),
            loader=loader,
            detect_repeats=s.repeat_detection,
        )
        self.metrics = IntakeMetrics.on(runtime.metrics.registry)

    @property
    def engine(self) -> AsyncEngine:
        """The writers' engine."""
        assert self.runtime is not None
        return self.runtime.engine

    @property
    def reader(self) -> AsyncEngine:
        """The readers' engine (a deferred-BEGIN one on SQLite)."""
        assert self.runtime is not None
        return self.runtime.reader

    @property
    def committer(self) -> GroupCommitter:
        """The group committer (running once the runtime has started)."""
        assert self.runtime is not None and self.runtime.committer is not None
        return self.runtime.committer

    @property
    def outbox(self) -> Outbox:
        assert self.runtime is not None
        return self.runtime.outbox

    @property
    def ready_pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline
