"""Evaluation's read side: every committee answer is one statement summing pre-aggregated cells.

A query sums month cells when its period is whole months and day cells otherwise, of the
smallest roll-up keeping every dimension it filters or slices on (``cells.grain_for``); it
filters on the cell dimensions (an area filter is one equality on the column of the area's
tier: codes nest, so a town's cells hold its villages' and grids'), groups by at most one
dimension and sums the counters and the handling-time buckets (for the p90) together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, ColumnElement, Select, and_, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typing_extensions import TypedDict

from services.evaluation import cells
from services.evaluation.metrics_registry import BUCKETS, COUNTERS, METRICS, evaluate
from services.evaluation.models import CELL_COLUMNS, TicketFact, cells_table
from services.evaluation.periods import Period
from shared import taxonomy
from shared.errors import Invalid
from shared.geo import Tier, UnknownArea, tier_of
from shared.geo import area as geo_area
from shared.workcalendar import SHANGHAI

Kind = Literal["appeal", "proactive"]
_AREA_COLUMN = {
    Tier.DISTRICT: "district_code",
    Tier.TOWN: "town_code",
    Tier.VILLAGE: "village_code",
    Tier.GRID: "grid_code",
}
_CHILD_COLUMN = {
    Tier.CITY: "district_code",
    Tier.DISTRICT: "town_code",
    Tier.TOWN: "village_code",
    Tier.VILLAGE: "grid_code",
    Tier.GRID: "grid_code",
}
# Slice name → cell column (``area`` is the children of the area filter, resolved per query).
DIMENSION_COLUMNS = {
    "department": "department_code",
    "tier": "department_tier",
    "district": "district_code",
    "town": "town_code",
    "village": "village_code",
    "grid": "grid_code",
    "channel": "channel",
    "category_top": "category_top",
    "category": "category_code",
    "line": "handling_line",
    "enterprise": "enterprise",
    "period": "period_start",
}
SLICES = (*DIMENSION_COLUMNS, "area")


@dataclass(frozen=True)
class Filters:
    """The filters of one answer; every one optional, all combinable."""

    department: str | None = None
    tier: str | None = None
    area: str | None = None
    channel: str | None = None
    category: str | None = None
    line: str | None = None
    enterprise: bool | None = None
    kind: Kind = "appeal"

    def stated(self) -> dict[str, Any]:
        """The filters as the answer states them (unset ones left out, the kind always)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def area_tier(self) -> Tier:
        if self.area is None:
            return Tier.CITY
        try:
            tier = tier_of(self.area)
            geo_area(self.area)
        except (ValueError, UnknownArea):
            raise Invalid(f"unknown area code {self.area!r}", field="area") from None
        return tier

    def dimensions(self) -> set[str]:
        """The cell columns the filters need (the kind always)."""
        needed = {"kind"}
        for name, column in (
            ("department", "department_code"),
            ("tier", "department_tier"),
            ("channel", "channel"),
            ("line", "handling_line"),
            ("enterprise", "enterprise"),
        ):
            if getattr(self, name) is not None:
                needed.add(column)
        if self.category is not None:
            needed.add("category_top" if len(self.category) == 2 else "category_code")
        tier = self.area_tier()
        if tier is not Tier.CITY:
            needed.add(_AREA_COLUMN[tier])
        return needed

    def conditions(self) -> list[ColumnElement[bool]]:
        c = cells_table.c
        # Appeals come with the mediation cases (their own counters); proactive work apart.
        kinds = ("appeal", "case") if self.kind == "appeal" else ("proactive",)
        where: list[ColumnElement[bool]] = [c.kind.in_(kinds)]
        if self.department is not None:
            where.append(c.department_code == self.department)
        if self.tier is not None:
            where.append(c.department_tier == self.tier)
        tier = self.area_tier()
        if self.area is not None and tier is not Tier.CITY:
            where.append(c[_AREA_COLUMN[tier]] == self.area)
        if self.channel is not None:
            where.append(c.channel == self.channel)
        if self.category is not None:
            if not taxonomy.is_known(self.category):
                raise Invalid(f"unknown category code {self.category!r}", field="category")
            column = c.category_top if len(self.category) == 2 else c.category_code
            where.append(column == self.category)
        if self.line is not None:
            where.append(c.handling_line == self.line)
        if self.enterprise is not None:
            where.append(c.enterprise == ("1" if self.enterprise else "0"))
        return where


class MetricValue(TypedDict):
    """One metric of one answer row. A typed dict, not a model: a sliced answer holds thousands
    of them, and building a model instance each was most of its time."""

    id: str
    name_zh: str
    name_en: str
    value: Annotated[float | None, Field(description="None when the denominator is zero")]
    numerator: float
    denominator: int


class Row(BaseModel):
    """The figures of one slice value (or of the whole selection)."""

    key: str | None = Field(description="the slice value; None for the whole selection")
    label_zh: str | None = None
    label_en: str | None = None
    sample_size: int = Field(description="tickets (or, for mediation only, cases) counted")
    metrics: list[MetricValue]
    counters: dict[str, int]


class PeriodOut(BaseModel):
    kind: str
    label: str
    start: date
    end: date = Field(description="the last day of the period (inclusive)")


class Answer(BaseModel):
    """Every answer states its period, its filters and its sample size."""

    period: PeriodOut
    filters: dict[str, Any]
    slice: str | None = None
    sample_size: int
    rows: list[Row]


def period_out(period: Period) -> PeriodOut:
    return PeriodOut(
        kind=period.kind, label=period.label(), start=period.start, end=period.last_day
    )


def label(dimension: str, key: str) -> tuple[str | None, str | None]:
    """Chinese and English names of a slice value, where the suite knows them."""
    if dimension in ("district", "town", "village", "grid", "area") and key:
        try:
            found = geo_area(key)
        except (UnknownArea, ValueError):
            return None, None
        return found.name_zh, found.name_en
    if dimension in ("category", "category_top") and taxonomy.is_known(key):
        category = taxonomy.get(key)
        return category.name_zh, category.name_en
    return None, None


def metric_values(
    counters: Mapping[str, int], buckets: Sequence[int], *, basic_weight: float
) -> list[MetricValue]:
    """Every registry metric of one row."""
    values = evaluate(counters, buckets, basic_weight=basic_weight)
    return [
        {
            "id": m.id,
            "name_zh": m.name_zh,
            "name_en": m.name_en,
            "value": values[m.id],
            "numerator": m.numerator_value(counters, basic_weight=basic_weight)
            if m.kind == "rate"
            else float(counters.get(m.numerator, 0)),
            "denominator": counters.get(m.denominator, 0),
        }
        for m in METRICS
    ]


@dataclass
class Sums:
    """Summed counters and handling-time buckets (in ``BUCKETS`` order) of one group."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    @property
    def sample_size(self) -> int:
        return self.counters["tickets"] or self.counters["cases_opened"]


def grain_for(period: Period, filters: Filters, dimension: str | None) -> str:
    """The smallest roll-up that answers exactly: over months when the period is whole months,
    weeks (or days) when it is whole weeks, keeping every dimension the filters and the slice
    need. A trend within whole weeks is by day, so it never sums week cells."""
    needed = filters.dimensions()
    if dimension is not None and dimension != "period":
        needed.add(group_column(dimension, filters).name)
    over = "day" if dimension == "period" and period.grain == "week" else period.grain
    return cells.grain_for(over, needed).name


def _where(period: Period, filters: Filters, grain: str) -> list[ColumnElement[bool]]:
    c = cells_table.c
    return [
        # inline, not bound: a prepared statement's generic plan cannot prove a bound grain
        # matches the partial department and town indexes (``models.DEPARTMENT_INDEXED``)
        c.grain == literal(grain, literal_execute=True),
        c.period_start >= period.start,
        c.period_start < period.end,
        *filters.conditions(),
    ]


def group_column(dimension: str | None, filters: Filters) -> Any:
    if dimension is None:
        return None
    if dimension == "area":
        return cells_table.c[_CHILD_COLUMN[filters.area_tier()]]
    if dimension not in DIMENSION_COLUMNS:
        raise Invalid(f"unknown slice {dimension!r}; one of {', '.join(SLICES)}", field="slice")
    return cells_table.c[DIMENSION_COLUMNS[dimension]]


async def sums(
    engine: AsyncEngine,
    *,
    period: Period,
    filters: Filters,
    dimension: str | None = None,
    grain: str | None = None,
) -> dict[str, Sums]:
    """Summed counters and handling-time buckets per value of ``dimension`` ("" when None)."""
    where = _where(period, filters, grain or grain_for(period, filters, dimension))
    column = group_column(dimension, filters)
    keys: list[Any] = [column] if column is not None else []
    # each sum cast back to an integer: PostgreSQL sums bigints as numeric, which the driver
    # would hand over as thousands of Decimals
    query: Select[Any] = select(
        *keys,
        *(cast(func.coalesce(func.sum(cells_table.c[n]), 0), BigInteger) for n in CELL_COLUMNS),
    ).where(and_(*where))
    if keys:
        query = query.group_by(*keys)
    out: dict[str, Sums] = {}
    split = len(keys) + len(COUNTERS)
    async with engine.connect() as conn:
        for row in await conn.execute(query):
            values = row[len(keys) : split]
            if not keys and not any(values):
                continue
            key = str(row[0]) if keys else ""
            out[key] = Sums(
                counters={n: int(v) for n, v in zip(COUNTERS, values, strict=True)},
                buckets=[int(v) for v in row[split:]],
            )
    return out


def answer(
    *,
    period: Period,
    filters: Filters,
    groups: Mapping[str, Sums],
    dimension: str | None,
    basic_weight: float,
) -> Answer:
    """The stated answer from summed groups."""
    total = Sums()
    for s in groups.values():
        for name, value in s.counters.items():
            total.counters[name] += value
    # Built without validation: every value is computed here from integers, and validating a
    # sliced answer's hundreds of rows was most of its time.
    rows = []
    for key in sorted(groups):
        s = groups[key]
        zh, en = label(dimension, key) if dimension else (None, None)
        rows.append(
            Row.model_construct(
                key=key if dimension else None,
                label_zh=zh,
                label_en=en,
                sample_size=s.sample_size,
                metrics=metric_values(s.counters, s.buckets, basic_weight=basic_weight),
                counters=s.counters,
            )
        )
    if dimension is None and not rows:
        rows = [
            Row.model_construct(
                key=None,
                label_zh=None,
                label_en=None,
                sample_size=0,
                metrics=metric_values(total.counters, (), basic_weight=basic_weight),
                counters=total.counters,
            )
        ]
    return Answer.model_construct(
        period=period_out(period),
        filters=filters.stated(),
        slice=dimension,
        sample_size=total.sample_size,
        rows=rows,
    )


async def figures(
    engine: AsyncEngine,
    *,
    period: Period,
    filters: Filters,
    dimension: str | None = None,
    basic_weight: float,
) -> Answer:
    """The metrics of a period and filters, whole or sliced by one dimension."""
    # A trend (slice "period") is by month within whole months, by day otherwise.
    groups = await sums(engine, period=period, filters=filters, dimension=dimension)
    return answer(
        period=period,
        filters=filters,
        groups=groups,
        dimension=dimension,
        basic_weight=basic_weight,
    )


FACT_EXPORT_COLUMNS: Sequence[str] = tuple(
    name for name in TicketFact.model_fields if name not in ("feedback_id",)
)


async def ticket_fact_rows(
    engine: AsyncEngine, *, period: Period | None, batch: int = 5000
) -> AsyncIterator[list[Any]]:
    """Every ticket fact (optionally received in a period), in id order, in batches: the
    auditors' export. Facts hold no personal data; the callback's id is left out too."""
    table = TicketFact.__table__  # type: ignore[attr-defined]
    columns = [table.c[name] for name in FACT_EXPORT_COLUMNS]
    after = ""
    while True:
        query = select(*columns).where(table.c.ticket_id > after)
        if period is not None:
            query = query.where(table.c.received_at >= _utc(period.start)).where(
                table.c.received_at < _utc(period.end)
            )
        query = query.order_by(table.c.ticket_id).limit(batch)
        async with engine.connect() as conn:
            rows = [list(r) for r in await conn.execute(query)]
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _utc(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), SHANGHAI)
