"""Prometheus gauges of the headline metrics, refreshed from the cells.

Label sets are bounded and documented (docs/evaluation.md):

- ``fengqiao_evaluation_district_rate{metric, district}``: every headline metric of the current
  month (Asia/Shanghai) per district of the city (the tree's districts, a dozen or so);
- ``fengqiao_evaluation_department_rate{metric, department}``: the same per department, for at
  most ``EVALUATION_GAUGES_MAX_DEPARTMENTS`` departments (the busiest this month);
- ``fengqiao_evaluation_city_rate{metric}``: the city as a whole;
- ``fengqiao_evaluation_folds_total{kind}``: ticket folds of this process since it started,
  ``resumed`` (new events folded onto a kept state) or ``refolded`` (the whole ledger).

A metric with no denominator this month is not exported (rather than exported as 0).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from services.evaluation import service
from services.evaluation.metrics_registry import HEADLINE, evaluate
from services.evaluation.periods import period_of
from services.evaluation.queries import Filters, sums
from services.evaluation.settings import EvaluationSettings
from shared.workcalendar import to_shanghai

if TYPE_CHECKING:
    from services.evaluation.context import EvaluationContext

log = logging.getLogger(__name__)


class _Folds(Collector):
    """``service.FOLDS`` as a counter, read when scraped."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "fengqiao_evaluation_folds",
            "Ticket folds since the process started: resumed from a kept state, or refolded",
            labels=["kind"],
        )
        for kind in ("resumed", "refolded"):
            family.add_metric([kind], service.FOLDS[kind])
        yield family


class Gauges:
    """The evaluation service's headline gauges."""

    def __init__(self, registry: CollectorRegistry) -> None:
        registry.register(_Folds())
        self.city = Gauge(
            "fengqiao_evaluation_city_rate",
            "Headline metric of the current month, city-wide (docs/metrics.md)",
            ["metric"],
            registry=registry,
        )
        self.district = Gauge(
            "fengqiao_evaluation_district_rate",
            "Headline metric of the current month per district (docs/metrics.md)",
            ["metric", "district"],
            registry=registry,
        )
        self.department = Gauge(
            "fengqiao_evaluation_department_rate",
            "Headline metric of the current month per department, busiest N only",
            ["metric", "department"],
            registry=registry,
        )


async def refresh(
    gauges: Gauges, *, engine: AsyncEngine, now: datetime, settings: EvaluationSettings
) -> None:
    """Set every gauge from the current month's cells."""
    period = period_of("month", to_shanghai(now).date())
    weight = settings.basic_satisfaction_weight
    filters = Filters()
    for gauge, dimension, limit in (
        (gauges.city, None, None),
        (gauges.district, "district", None),
        (gauges.department, "department", settings.gauges_max_departments),
    ):
        groups = await sums(engine, period=period, filters=filters, dimension=dimension)
        keys = sorted(
            (k for k in groups if k or dimension is None),
            key=lambda k: -groups[k].counters["tickets"],
        )
        if limit is not None:
            keys = keys[:limit]
        gauge.clear()
        for key in keys:
            values = evaluate(groups[key].counters, groups[key].buckets, basic_weight=weight)
            for metric in HEADLINE:
                value = values[metric.id]
                if value is None:
                    continue
                labels = (metric.id,) if dimension is None else (metric.id, key)
                gauge.labels(*labels).set(value)


async def loop(ctx: EvaluationContext) -> None:
    """Refresh the gauges every ``gauges_interval_s`` until cancelled."""
    while True:
        try:
            await refresh(ctx.gauges, engine=ctx.reader, now=ctx.now(), settings=ctx.settings)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("refreshing the evaluation gauges failed; retrying next interval")
        await asyncio.sleep(ctx.settings.gauges_interval_s)
