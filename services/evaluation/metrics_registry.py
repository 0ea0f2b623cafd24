"""Every metric the committee reads, declared once.

A metric is a ratio of two *counters* (additive integers kept per cell of the pre-aggregated
table, see ``cells.py``), or a percentile of the handling-time buckets (counters too, one per
bucket, kept on the same cells). The one declaration
below drives the JSON API, the CSV export, the dashboard, the Prometheus gauges and
``docs/metrics.md`` (``python -m services.evaluation.metrics_registry`` writes it; a test checks
the committed file matches).

Periods: a ticket's counters fall in the period (Asia/Shanghai) of the day it was received; a
proactive dispatch's in that of its first assignment; a mediation case's "opened" counter on the
day it opened, its outcome counters on the day it closed.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Counters, in column order. Each says what one unit of it is.
COUNTERS: dict[str, str] = {
    "tickets": "tickets (appeals, or proactive dispatches) with any event",
    "received": "tickets received by intake",
    "dispatched": "tickets assigned at least once",
    "completed": "tickets completed (办结): no dispatch open and at least one completed",
    "completed_on_time": "completed tickets whose closing dispatch was not completed late",
    "callbacks": "completed tickets with a counted callback (the latest revision received "
    "after completion)",
    "callbacks_on_open": "tickets still open with a callback: kept, not counted in any rate",
    "resolved": "counted callbacks saying the matter was resolved",
    "satisfied": "counted callbacks answering satisfied (满意)",
    "basically_satisfied": "counted callbacks answering basically satisfied (基本满意)",
    "dissatisfied": "counted callbacks answering dissatisfied (不满意)",
    "one_time": "completed tickets with no approved return, no reopening and no repeat appeal",
    "repeats": "received tickets that repeat an earlier appeal",
    "returned": "tickets with at least one approved return (退单)",
    "transferred": "tickets handed on by one department to another at least once",
    "extended": "tickets with at least one approved extension",
    "escalated": "tickets with at least one missed clock escalated a tier up",
    "supervised": "tickets put under supervision (督办)",
    "whistled": "tickets on which a whistle was blown (吹哨)",
    "mediated": "completed tickets closed through a mediated agreement",
    "closed_village": "completed tickets closed at village or grid tier",
    "closed_town": "completed tickets closed at town tier or below",
    "handling_centidays": "sum of completed tickets' handling time, in hundredths of a working day",
    "dispatches": "dispatches (one department's share of a ticket)",
    "sign_due": "dispatches signed for, or escalated for not being signed for",
    "sign_on_time": "dispatches signed for within the sign-for clock",
    "contact_due": "dispatches that contacted the citizen, or were escalated for not doing so",
    "contact_on_time": "dispatches whose first contact was within the 2 h / next-day clock",
    "reports_due": "whistle summonses",
    "reports_on_time": "whistle summonses reported to (报到) on time",
    "cases_opened": "mediation cases opened (from a ticket or a walk-in)",
    "cases_closed": "mediation cases closed with an outcome (withdrawn cases excepted)",
    "cases_succeeded": "mediation cases closed agreed or fulfilled",
}

# Handling-time buckets (upper edges in hundredths of a working day, inclusive): quarter days up
# to 10 working days, whole days up to 30, then one open bucket. A completed ticket counts in the
# first bucket whose edge is at least its handling time; each bucket is a counter on the cells.
HANDLING_EDGES: tuple[int, ...] = (*range(25, 1001, 25), *range(1100, 3001, 100))
BUCKETS: tuple[str, ...] = (*(f"h_{edge:04d}" for edge in HANDLING_EDGES), "h_over")


def bucket(centidays: int) -> str:
    """The bucket counter a handling time (hundredths of a working day) counts in."""
    return BUCKETS[bisect_left(HANDLING_EDGES, centidays)]


Kind = Literal["rate", "mean", "p90"]


@dataclass(frozen=True)
class Metric:
    """One published metric: a ratio (or percentile) of counters with its formula in words."""

    id: str
    name_zh: str
    name_en: str
    formula: str
    numerator: str
    denominator: str
    kind: Kind = "rate"
    # Where the committee wants it (a published target), for the dashboard; None: none set.
    target: float | None = None
    higher_is_better: bool = True
    headline: bool = False

    def value(self, counters: Mapping[str, int], *, basic_weight: float = 0.8) -> float | None:
        """The metric from summed counters (None when the denominator is zero)."""
        denominator = counters.get(self.denominator, 0)
        if denominator == 0:
            return None
        if self.kind == "mean":
            return round(counters.get(self.numerator, 0) / denominator / 100, 2)
        return round(self.numerator_value(counters, basic_weight=basic_weight) / denominator, 6)

    def numerator_value(self, counters: Mapping[str, int], *, basic_weight: float = 0.8) -> float:
        """The numerator; satisfaction weighs "basically satisfied" by ``basic_weight``."""
        if self.id == "satisfaction":
            return counters.get("satisfied", 0) + basic_weight * counters.get(
                "basically_satisfied", 0
            )
        return float(counters.get(self.numerator, 0))


METRICS: tuple[Metric, ...] = (
    Metric(
        "sign_for_on_time",
        "签收及时率",
        "Sign-for on time",
        "dispatches signed for within the sign-for clock ÷ dispatches signed for or escalated "
        "for not being signed for (the late flag dispatch set on the event decides)",
        "sign_on_time",
        "sign_due",
        target=0.99,
        headline=True,
    ),
    Metric(
        "first_contact_on_time",
        "首次联系及时率",
        "First contact on time",
        "dispatches whose first contact with the citizen met its clock (2 h urgent, next "
        "working day otherwise) ÷ dispatches that made contact or were escalated for not doing so",
        "contact_on_time",
        "contact_due",
        target=0.99,
    ),
    Metric(
        "on_time_completion",
        "按期办结率",
        "On-time completion",
        "completed tickets whose closing dispatch was not late (by the deadline the events "
        "carry, extensions included) ÷ completed tickets",
        "completed_on_time",
        "completed",
        target=0.9999,
        headline=True,
    ),
    Metric(
        "resolution",
        "解决率",
        "Resolution rate",
        "counted callbacks saying resolved ÷ counted callbacks; a callback counts when it is "
        "the latest revision received after the ticket's completion — one on a ticket still "
        "open is kept but not counted",
        "resolved",
        "callbacks",
        target=0.9828,
        headline=True,
    ),
    Metric(
        "satisfaction",
        "满意率",
        "Satisfaction rate",
        "(satisfied + w × basically satisfied) ÷ counted callbacks, w from configuration "
        "(EVALUATION_BASIC_SATISFACTION_WEIGHT, default 0.8); counted as for the resolution rate",
        "satisfied",
        "callbacks",
        target=0.9829,
        headline=True,
    ),
    Metric(
        "one_time_resolution",
        "一次性办结率",
        "One-time resolution",
        "completed tickets with no approved return, no reopening and that repeat no earlier "
        "appeal ÷ completed tickets",
        "one_time",
        "completed",
    ),
    Metric(
        "repeat_rate",
        "重复诉求率",
        "Repeat-appeal rate",
        "received tickets intake marked as repeating an earlier appeal ÷ received tickets",
        "repeats",
        "received",
        higher_is_better=False,
    ),
    Metric(
        "return_rate",
        "退单率",
        "Return rate",
        "tickets with at least one approved return ÷ dispatched tickets",
        "returned",
        "dispatched",
        higher_is_better=False,
    ),
    Metric(
        "transfer_rate",
        "转办率",
        "Transfer rate",
        "tickets handed from one department to another at least once ÷ dispatched tickets",
        "transferred",
        "dispatched",
        higher_is_better=False,
    ),
    Metric(
        "extension_rate",
        "延期率",
        "Extension rate",
        "tickets with at least one approved extension ÷ dispatched tickets",
        "extended",
        "dispatched",
        higher_is_better=False,
    ),
    Metric(
        "escalation_rate",
        "升级率",
        "Escalation rate",
        "tickets with at least one missed clock escalated a tier up ÷ dispatched tickets",
        "escalated",
        "dispatched",
        higher_is_better=False,
    ),
    Metric(
        "village_resolution",
        "小事不出村率",
        "Settled in the village",
        "completed tickets closed by a village or grid tier unit ÷ completed tickets",
        "closed_village",
        "completed",
    ),
    Metric(
        "town_resolution",
        "大事不出镇率",
        "Settled in the town",
        "completed tickets closed at town tier or below ÷ completed tickets",
        "closed_town",
        "completed",
    ),
    Metric(
        "whistle_report_on_time",
        "吹哨报到及时率",
        "Whistle reports on time",
        "whistle summonses reported to on time ÷ whistle summonses",
        "reports_on_time",
        "reports_due",
    ),
    Metric(
        "mediation_success",
        "调解成功率",
        "Mediation success rate",
        "mediation cases closed agreed or fulfilled ÷ mediation cases closed (withdrawn cases "
        "excepted), walk-in cases included, in the period they closed",
        "cases_succeeded",
        "cases_closed",
        target=0.97,
        headline=True,
    ),
    Metric(
        "average_handling_days",
        "平均办理时长（工作日）",
        "Average handling time (working days)",
        "sum over completed tickets of the working days from receipt to completion (each "
        "working day of the official calendar counts by the share of its 24 h inside the span, "
        "rounded to 0.01 per ticket) ÷ completed tickets",
        "handling_centidays",
        "completed",
        kind="mean",
        target=1.75,
        higher_is_better=False,
        headline=True,
    ),
    Metric(
        "p90_handling_days",
        "办理时长90分位（工作日）",
        "90th percentile handling time (working days)",
        "the upper edge of the handling-time bucket holding the completed ticket at rank "
        "⌈0.9 × n⌉ when the n completed tickets are ordered by handling time (as for the "
        "average): buckets of a quarter of a working day up to 10 working days, of a whole "
        "day up to 30, edges inclusive, so a p90 of 2.5 means between 2.26 and 2.50; 30 or more "
        "reads 30",
        "handling_centidays",
        "completed",
        kind="p90",
        higher_is_better=False,
    ),
)

BY_ID: dict[str, Metric] = {m.id: m for m in METRICS}
HEADLINE: tuple[Metric, ...] = tuple(m for m in METRICS if m.headline)


def p90_from_buckets(counts: Sequence[int]) -> float | None:
    """The upper edge of the bucket holding the nearest-rank 90th percentile, in working days;
    ``counts`` in ``BUCKETS`` order. The open last bucket reads as its lower edge (30)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = -(-9 * total // 10)  # ⌈0.9 n⌉ in integers
    seen = 0
    for edge, n in zip((*HANDLING_EDGES, HANDLING_EDGES[-1]), counts, strict=True):
        seen += n
        if seen >= rank:
            return edge / 100
    raise AssertionError("unreachable: the ranks add up to the total")


def evaluate(
    counters: Mapping[str, int],
    buckets: Sequence[int] = (),
    *,
    basic_weight: float = 0.8,
) -> dict[str, float | None]:
    """Every metric's value from summed counters (and the handling buckets for the p90)."""
    values: dict[str, float | None] = {}
    for metric in METRICS:
        if metric.kind == "p90":
            values[metric.id] = p90_from_buckets(buckets or (0,) * len(BUCKETS))
        else:
            values[metric.id] = metric.value(counters, basic_weight=basic_weight)
    return values


def markdown() -> str:
    """``docs/metrics.md``, generated from the declarations above."""
    lines = [
        "# Evaluation metrics",
        "",
        "Generated from `services/evaluation/metrics_registry.py` by",
        "`python -m services.evaluation.metrics_registry docs/metrics.md`; a test fails when",
        "this file and the registry differ. Every figure the API, the CSV exports, the dashboard",
        "and the Prometheus gauges show comes from these declarations.",
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip(),
        "",
        "## Metrics",
        "",
        "| id | 名称 | name | formula | numerator | denominator | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        target = "" if m.target is None else f"{m.target:g}"
        lines.append(
            f"| `{m.id}` | {m.name_zh} | {m.name_en} | {m.formula} | `{m.numerator}` | "
            f"`{m.denominator}` | {target} |"
        )
    lines += ["", "## Counters", "", "| counter | one unit is |", "|---|---|"]
    lines += [f"| `{name}` | {meaning} |" for name, meaning in COUNTERS.items()]
    lines += [
        "",
        "## Handling-time buckets",
        "",
        "Each cell also counts its completed tickets by handling time, in working days as for the",
        "average: the bucket counter `h_EEEE` (EEEE the upper edge in hundredths of a working day)",
        "holds the tickets above the previous edge (the first: from 0) up to and including its",
        "own. Edges: "
        + ", ".join(f"{e / 100:g}" for e in HANDLING_EDGES[:4])
        + ", … every quarter day up to 10, then 11, 12, … every whole day up to 30;",
        "`h_over` holds the tickets above 30 working days. The p90 is the upper edge of the",
        "bucket holding the ⌈0.9 × n⌉-th ticket in handling-time order: never below the exact",
        "nearest-rank value, at most a quarter day above it up to 10 working days and a day above",
        "it up to 30; beyond 30 it reads 30.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1] if len(sys.argv) > 1 else "docs/metrics.md").write_text(
        markdown(), encoding="utf-8"
    )
