"""Prometheus metrics: one registry per service app, so several apps can share a process."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "HttpMetricsMiddleware", "ServiceMetrics"]


class ServiceMetrics:
    """The metrics every service exposes at ``/metrics``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_latency = Histogram(
            "fengqiao_http_request_duration_seconds",
            "HTTP request latency by route template, method and status class.",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.events_produced = Counter(
            "fengqiao_events_produced_total",
            "Events published by the outbox relay.",
            ["type"],
            registry=r,
        )
        self.events_consumed = Counter(
            "fengqiao_events_consumed_total", "Events applied by a consumer.", ["type"], registry=r
        )
        self.events_duplicate = Counter(
            "fengqiao_events_duplicate_total",
            "Deliveries skipped because the inbox had already applied the event.",
            ["type"],
            registry=r,
        )
        self.events_passed_over = Counter(
            "fengqiao_events_passed_over_total",
            "Deliveries of a handled type that the handler declares no concern of this service"
            " (mediation's assignments off the mediation line): skipped before the inbox.",
            ["type"],
            registry=r,
        )
        self.events_failed = Counter(
            "fengqiao_events_failed_total", "Handler attempts that raised.", ["type"], registry=r
        )
        self.events_dead_lettered = Counter(
            "fengqiao_events_dead_lettered_total",
            "Events sent to the dead-letter topic after failing or not decoding.",
            ["type"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "fengqiao_outbox_backlog",
            "Outbox rows not yet published: the span of their ids (a bound when the ids have"
            " holes). A bundle (a batch file's events) is one row.",
            registry=r,
        )
        self.outbox_republished = Counter(
            "fengqiao_outbox_republished_total",
            "Outbox rows queued again because the broker was found wiped or replaced.",
            registry=r,
        )
        self.broker_epoch_changes = Counter(
            "fengqiao_broker_epoch_changes_total",
            "Times the broker's cluster id changed under a running service.",
            registry=r,
        )
        self.group_commit_size = Histogram(
            "fengqiao_group_commit_units",
            "Requests sharing one database transaction.",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """Pure ASGI middleware recording latency by route template (not raw path: bounded labels).

    Without ``metrics`` it finds them on the app's state once the lifespan has put them there.
    The histogram child of each (method, route, status class) is looked up once: ``labels()``
    takes a lock and builds keys on every call, a measurable share of a small request.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics is None:
            app = scope.get("app")
            self.metrics = getattr(getattr(app, "state", None), "metrics", None)
            if self.metrics is None:
                await self.app(scope, receive, send)
                return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            key = (scope["method"], template, status // 100)
            child = self._children.get(key)
            if child is None:
                child = self.metrics.http_latency.labels(key[0], template, f"{key[2]}xx")
                self._children[key] = child
            child.observe(time.perf_counter() - start)
