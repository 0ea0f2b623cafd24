"""Dispatch's own Prometheus metrics, registered on the service's registry at bind time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DispatchMetrics:
    """Dispatch's own metrics, on the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.actions = Counter(
            "fengqiao_dispatch_actions_total",
            "Workflow actions applied to dispatches, by action.",
            ["action"],
            registry=registry,
        )
        self.escalations = Counter(
            "fengqiao_dispatch_escalations_total",
            "Missed clocks escalated one tier up, by clock.",
            ["clock"],
            registry=registry,
        )
        self.grabs_expired = Counter(
            "fengqiao_dispatch_grab_expired_total",
            "Pooled tickets nobody grabbed in time, assigned and supervised.",
            registry=registry,
        )
        self.proactive = Counter(
            "fengqiao_dispatch_proactive_total",
            "Proactive dispatches (未诉先办) created from evaluation's proposals, counted apart "
            "from citizens' appeals.",
            registry=registry,
        )
        self.scheduler_errors = Counter(
            "fengqiao_dispatch_scheduler_errors_total",
            "Scheduler passes that failed (retried on the next pass).",
            registry=registry,
        )
        self.scheduler_skipped = Counter(
            "fengqiao_dispatch_scheduler_skipped_total",
            "Scheduler steps skipped because the calendar refused a deadline they need "
            "(beyond_data: raise past the calendar's data); retried every pass. By step: "
            "escalate (a missed clock), assign (an expired grab window).",
            ["step"],
            registry=registry,
        )
        self.deadlines_on_fallback = Counter(
            "fengqiao_dispatch_deadlines_on_fallback_total",
            "Deadlines computed with the weekday fallback: beyond the official calendar data and "
            "the operators' overrides. Fill data/calendar.yaml when the schedule is published.",
            ["year"],
            registry=registry,
        )
        self.calendar_days_left = Gauge(
            "fengqiao_dispatch_calendar_days_covered",
            "Days from today to the end of the last year the calendar covers without fallback.",
            registry=registry,
        )
