"""The metric registry: the committed docs/metrics.md is what the registry generates, and the
percentile and weighting rules hold."""

from __future__ import annotations

from pathlib import Path

from services.evaluation.metrics_registry import (
    BY_ID,
    COUNTERS,
    METRICS,
    markdown,
    p90_from_histogram,
)

ROOT = Path(__file__).resolve().parents[3]


def test_the_committed_metrics_doc_matches_the_registry() -> None:
    committed = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert committed == markdown(), (
        "docs/metrics.md is stale: python -m services.evaluation.metrics_registry docs/metrics.md"
    )


def test_every_metric_counts_declared_counters() -> None:
    assert METRICS
    for metric in METRICS:
        assert metric.numerator in COUNTERS and metric.denominator in COUNTERS, metric.id


def test_the_p90_is_the_nearest_rank() -> None:
    # ten tickets: rank ⌈9⌉ = 9th smallest
    assert p90_from_histogram({100: 8, 250: 1, 900: 1}) == 2.5
    # eleven: rank ⌈9.9⌉ = 10th
    assert p90_from_histogram({100: 9, 250: 1, 900: 1}) == 2.5
    assert p90_from_histogram({100: 9, 900: 2}) == 9.0
    assert p90_from_histogram({}) is None


def test_satisfaction_weighs_basically_satisfied() -> None:
    counters = {"satisfied": 6, "basically_satisfied": 3, "callbacks": 10}
    assert BY_ID["satisfaction"].value(counters, basic_weight=0.8) == round(8.4 / 10, 6)
    assert BY_ID["satisfaction"].value(counters, basic_weight=1.0) == 0.9
    assert BY_ID["resolution"].value({"callbacks": 0}) is None
