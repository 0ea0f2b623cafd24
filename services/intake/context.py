"""What every intake operation needs: settings, the pipeline, the write path and metrics.

One ``IntakeContext`` is built per app in ``app.create_app`` and bound to the runtime at start-up
(the group committer exists only once the runtime runs).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter

from services.intake import classifier
from services.intake.groups import AppealGroups
from services.intake.ids import TicketIdAllocator
from services.intake.models import outbox_table
from services.intake.pipeline import Pipeline
from services.intake.ratelimit import ClientLimiter
from services.intake.repeat_lookup import CandidateLoader, policy_from
from services.intake.settings import IntakeSettings
from shared import heap
from shared.clock import Clock
from shared.groupcommit import GroupCommitter
from shared.outbox import Outbox
from shared.runtime import Runtime, ServiceContext

T = TypeVar("T")

# A group of fewer rows waits for its commit before the next is taken (``AppealGroups``): single
# posts and small files, whose group's fixed cost is the larger part of a post's.
SMALL_GROUP_ROWS = 256
# ... unless posts have queued and none joined them for this long (seconds): the callers not in
# the committing group have all sent theirs, and the next group is prepared during the commit.
SMALL_GROUP_QUIET_S = 0.001


@dataclass
class IntakeMetrics:
    """Intake's own counters, on the service's registry."""

    tickets: Counter
    rows_rejected: Counter
    # The tickets counter's children by (channel, outcome): the ones ``labels`` returns, looked
    # up once rather than through its lock and label checks for every appeal.
    _ticket_children: dict[tuple[str, str], Any] = field(default_factory=dict)

    def count_tickets(self, channel: str, outcome: str, n: int = 1) -> None:
        child = self._ticket_children.get((channel, outcome))
        if child is None:
            child = self._ticket_children[channel, outcome] = self.tickets.labels(channel, outcome)
        child.inc(n)

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


class IntakeContext(ServiceContext):
    """The running intake: the pipeline and metrics are built when it is bound to its runtime."""

    settings: IntakeSettings

    def __init__(self, settings: IntakeSettings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, outbox=Outbox(outbox_table), clock=clock)
        self.pipeline: Pipeline | None = None
        self.loader: CandidateLoader | None = None
        self.appeal_groups: AppealGroups | None = None
        self.metrics: IntakeMetrics | None = None
        self.limiter = ClientLimiter(settings.public_rate_limit)
        self._parser: ThreadPoolExecutor | None = None

    def bind(self, runtime: Runtime) -> None:
        """Build the pipeline on the runtime's engines and register the metrics."""
        super().bind(runtime)
        s = self.settings
        self.loader = loader = CandidateLoader(
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
        self.appeal_groups = AppealGroups(
            self.pipeline,
            self.outbox,
            lambda: self.committer,
            wait_below=SMALL_GROUP_ROWS,
            quiet=SMALL_GROUP_QUIET_S,
        )
        self.metrics = IntakeMetrics.on(runtime.metrics.registry)

    async def start(self) -> None:
        """Fit the classifier and settle the collector before the first request."""
        # The classifier fits its model in about a second: at start-up, not on the first request.
        await asyncio.to_thread(classifier.warm_up)
        heap.settle(heap.FILES_YOUNG_THRESHOLD)  # a batch file's rows live until its commit

    async def stop(self) -> None:
        """Return the repeat look-ups' kept connections to the pool; end the parsing thread."""
        if self.loader is not None:
            await self.loader.close()
        if self._parser is not None:
            self._parser.shutdown(wait=False, cancel_futures=True)
            self._parser = None

    async def parse(self, parse: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Parse a batch file off the event loop (a large file parses for seconds, and health
        checks, other channels' posts and the consumer must not wait for it), on the process's
        one parsing thread: files queue for it. With a thread per file (``asyncio.to_thread``,
        up to six) the files in flight parsed side by side and took the interpreter's lock from
        the loop and from each other every few milliseconds: no faster (one lock), and the
        batch benchmark's server spent ~5 % more CPU a row (docs/benchmarks.md)."""
        if self._parser is None:
            self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-parse")
        loop = asyncio.get_running_loop()
        call = contextvars.copy_context().run
        return await loop.run_in_executor(self._parser, partial(call, parse, *args, **kwargs))

    @property
    def committer(self) -> GroupCommitter:
        """The group committer (running once the runtime has started)."""
        committer = self.runtime.committer
        assert committer is not None, "intake runs with group commit"
        return committer

    @property
    def groups(self) -> AppealGroups:
        """Where appeals queue to be prepared and stored a group at a time."""
        assert self.appeal_groups is not None
        return self.appeal_groups

    @property
    def ready_pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline
