"""The metric registry: the committed docs/metrics.md is what the registry generates, and the
percentile and weighting rules hold."""

from __future__ import annotations

from pathlib import Path

from services.evaluation.metrics_registry import (
    BUCKETS,
    BY_ID,
    COUNTERS,
    HANDLING_EDGES,
    METRICS,
    bucket,
    markdown,
    p90_from_buckets,
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


def counts(*centidays: int) -> list[int]:
    """Bucket counts of some handling times."""
    out = [0] * len(BUCKETS)
    for c in centidays:
        out[BUCKETS.index(bucket(c))] += 1
    return out


def test_handling_times_fall_in_published_buckets() -> None:
    # quarter days up to 10 working days, edges inclusive, then whole days up to 30, then open
    assert [bucket(c) for c in (0, 1, 25, 26, 229, 250, 251)] == [
        "h_0025",
        "h_0025",
        "h_0025",
        "h_0050",
        "h_0250",
        "h_0250",
        "h_0275",
    ]
    assert [bucket(c) for c in (1000, 1001, 1100, 3000, 3001)] == [
        "h_1000",
        "h_1100",
        "h_1100",
        "h_3000",
        "h_over",
    ]
    assert len(BUCKETS) == len(HANDLING_EDGES) + 1 == 61


def test_the_p90_is_the_upper_edge_of_the_nearest_rank_bucket() -> None:
    # ten tickets: rank ⌈9⌉ = 9th smallest, 2.5 on an edge
    assert p90_from_buckets(counts(*[100] * 8, 250, 900)) == 2.5
    # eleven: rank ⌈9.9⌉ = 10th
    assert p90_from_buckets(counts(*[100] * 9, 250, 900)) == 2.5
    assert p90_from_buckets(counts(*[100] * 9, 900, 900)) == 9.0
    # 2.29 lies in (2.25, 2.50]: the figure is the bucket's upper edge
    assert p90_from_buckets(counts(*[100] * 8, 229, 300)) == 2.5
    # 12.3 in (12, 13]; beyond 30 reads 30
    assert p90_from_buckets(counts(*[100] * 8, 1230, 5000)) == 13.0
    assert p90_from_buckets(counts(*[100] * 8, 4000, 5000)) == 30.0
    assert p90_from_buckets([0] * len(BUCKETS)) is None


def test_satisfaction_weighs_basically_satisfied() -> None:
    counters = {"satisfied": 6, "basically_satisfied": 3, "callbacks": 10}
    assert BY_ID["satisfaction"].value(counters, basic_weight=0.8) == round(8.4 / 10, 6)
    assert BY_ID["satisfaction"].value(counters, basic_weight=1.0) == 0.9
    assert BY_ID["resolution"].value({"callbacks": 0}) is None
