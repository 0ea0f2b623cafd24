"""Evaluation's HTTP routes: the committee's figures, ranking, hot spots and exports.

Read-only: the committee and its supervision office read (operators always may). Every answer
states its period, filters and sample size; every table has a CSV twin (``.csv``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from services.evaluation import hotspots, ranking, service
from services.evaluation.context import EvaluationContext
from services.evaluation.metrics_registry import COUNTERS, METRICS
from services.evaluation.models import Summary
from services.evaluation.periods import Period, resolve
from services.evaluation.queries import (
    FACT_EXPORT_COLUMNS,
    SLICES,
    Answer,
    Filters,
    figures,
    period_out,
    sums,
    ticket_fact_rows,
)
from shared.auth import Role, require_roles
from shared.runtime import context_of
from shared.workcalendar import to_shanghai

# The committee and its supervision office read the metrics (operators always may); the
# hotline, departments and the other roles may not (docs/security.md).
METRICS_READERS = (Role.COMMITTEE,)

EvaluationDep = Annotated[EvaluationContext, Depends(context_of(EvaluationContext))]

router = APIRouter(tags=["metrics"], dependencies=[Depends(require_roles(*METRICS_READERS))])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A malformed identity header"},
    401: {"description": "No role (header mode), or a unit role without its unit"},
    403: {"description": "The role may not read the metrics"},
    422: {"description": "An unknown period, slice, area, category or weights version"},
}

FORMULAS = "\n".join(
    f"- `{m.id}` {m.name_zh} ({m.name_en}): {m.formula}. Numerator `{m.numerator}`, "
    f"denominator `{m.denominator}`."
    for m in METRICS
)
PERIOD_NOTE = (
    "Periods are Asia/Shanghai days, ISO weeks, months, quarters or years around `on` (default "
    "today), or `start`..`end` (inclusive). A ticket counts in the period it was received."
)


def period_param(
    ctx: EvaluationDep,
    period: Annotated[
        Literal["day", "week", "month", "quarter", "year"], Query(description="period kind")
    ] = "month",
    on: Annotated[date | None, Query(description="a day inside the period")] = None,
    start: Annotated[date | None, Query(description="first day of a range")] = None,
    end: Annotated[date | None, Query(description="last day of a range (inclusive)")] = None,
) -> Period:
    """The period a request names."""
    return resolve(period, on, start, end, to_shanghai(ctx.now()).date())


def filters_param(
    department: Annotated[str | None, Query(max_length=64)] = None,
    tier: Annotated[
        Literal["city", "district", "town", "village", "grid"] | None,
        Query(description="tier of the department that closed the ticket"),
    ] = None,
    area: Annotated[
        str | None,
        Query(max_length=15, description="area code; a town includes its villages and grids"),
    ] = None,
    channel: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[
        str | None, Query(max_length=4, description="top-level (2 digits) or leaf code")
    ] = None,
    line: Annotated[str | None, Query(max_length=32, description="handling line")] = None,
    enterprise: Annotated[bool | None, Query(description="enterprise appeals only / none")] = None,
    kind: Annotated[
        Literal["appeal", "proactive"],
        Query(description="appeals (with mediation cases) or proactive work (未诉先办), apart"),
    ] = "appeal",
) -> Filters:
    """The filters a request names (all combinable)."""
    return Filters(
        department=department,
        tier=tier,
        area=area,
        channel=channel,
        category=category,
        line=line,
        enterprise=enterprise,
        kind=kind,
    )


PeriodDep = Annotated[Period, Depends(period_param)]
FiltersDep = Annotated[Filters, Depends(filters_param)]
SliceParam = Annotated[
    str | None,
    Query(
        description=f"slice by one of: {', '.join(SLICES)} (`area`: the children of the area "
        "filter, rolled up; `period`: a trend by month or day)"
    ),
]
UnitParam = Annotated[Literal["department", "district", "town"], Query()]


def csv_response(
    header: Sequence[str], rows: Iterable[Sequence[Any]], name: str
) -> StreamingResponse:
    """A CSV download (UTF-8 with BOM, so spreadsheet programs read the Chinese names)."""

    def lines() -> Iterable[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        yield "\ufeff" + buffer.getvalue()
        for row in rows:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(["" if v is None else v for v in row])
            yield buffer.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get("/summary", response_model=Summary, responses=ERRORS)
async def get_summary(ctx: EvaluationDep) -> Summary:
    """Tickets received, dispatched, awaiting dispatch and called back, from the event stream."""
    async with ctx.sessions() as session:
        return await service.summary(session=session)


@router.get("/registry", responses=ERRORS)
async def get_registry() -> list[dict[str, Any]]:
    """Every metric the committee reads: id, Chinese and English name, formula, numerator,
    denominator and target (the same declarations drive every other answer)."""
    return [m.__dict__ for m in METRICS]


@router.get("/registry.csv", responses=ERRORS)
async def get_registry_csv() -> StreamingResponse:
    """The metric registry as CSV."""
    fields = list(METRICS[0].__dict__)
    return csv_response(fields, ([m.__dict__[f] for f in fields] for m in METRICS), "registry")


@router.get(
    "/figures", response_model=Answer, responses=ERRORS, description=f"{PERIOD_NOTE}\n\n{FORMULAS}"
)
async def get_figures(
    ctx: EvaluationDep, period: PeriodDep, filters: FiltersDep, slice: SliceParam = None
) -> Answer:
    """Every metric for a period and filters, whole or sliced by one dimension."""
    return await figures(
        ctx.reader,
        period=period,
        filters=filters,
        dimension=slice,
        basic_weight=ctx.settings.basic_satisfaction_weight,
    )


def answer_rows(answer: Answer) -> tuple[list[str], list[list[Any]]]:
    """An answer as a flat table: stated period and filters, then one row per slice value."""
    header = [
        "period",
        "start",
        "end",
        "filters",
        "slice",
        "key",
        "label_zh",
        "label_en",
        "sample_size",
    ]
    for m in METRICS:
        header += [m.id, f"{m.id}_numerator", f"{m.id}_denominator"]
    header += list(COUNTERS)
    filters = ";".join(f"{k}={v}" for k, v in answer.filters.items())
    rows = []
    for row in answer.rows:
        line: list[Any] = [
            answer.period.label,
            answer.period.start,
            answer.period.end,
            filters,
            answer.slice,
            row.key,
            row.label_zh,
            row.label_en,
            row.sample_size,
        ]
        for value in row.metrics:
            line += [value["value"], value["numerator"], value["denominator"]]
        line += [row.counters[c] for c in COUNTERS]
        rows.append(line)
    return header, rows


@router.get("/figures.csv", responses=ERRORS, description=f"{PERIOD_NOTE}\n\n{FORMULAS}")
async def get_figures_csv(
    ctx: EvaluationDep, period: PeriodDep, filters: FiltersDep, slice: SliceParam = None
) -> StreamingResponse:
    """The figures as CSV: one row per slice value, each metric with its numerator and
    denominator, then every counter."""
    answer = await get_figures(ctx, period, filters, slice)
    header, rows = answer_rows(answer)
    return csv_response(header, rows, f"figures-{answer.period.label}")


async def _ranking(
    ctx: EvaluationContext, period: Period, filters: Filters, unit: str, weights: str | None
) -> ranking.Ranking:
    settings = ctx.settings
    groups = await sums(ctx.reader, period=period, filters=filters, dimension=unit)
    return ranking.rank(
        groups,
        period=period_out(period),
        filters=filters,
        unit=unit,
        weights=ranking.weights(weights or settings.weights_version),
        min_sample=settings.ranking_min_sample,
        basic_weight=settings.basic_satisfaction_weight,
        red_bottom_n=settings.red_bottom_n,
        red_below=settings.red_below,
        yellow_bottom_n=settings.yellow_bottom_n,
        yellow_below=settings.yellow_below,
    )


RANKING_NOTE = (ranking.__doc__ or "").strip()


@router.get("/ranking", response_model=ranking.Ranking, responses=ERRORS, description=RANKING_NOTE)
async def get_ranking(
    ctx: EvaluationDep,
    period: PeriodDep,
    filters: FiltersDep,
    unit: UnitParam = "department",
    weights: Annotated[str | None, Query(max_length=32, description="weights version")] = None,
) -> ranking.Ranking:
    """The ranking of departments, districts or towns, with the red and yellow lists."""
    return await _ranking(ctx, period, filters, unit, weights)


@router.get("/ranking.csv", responses=ERRORS, description=RANKING_NOTE)
async def get_ranking_csv(
    ctx: EvaluationDep,
    period: PeriodDep,
    filters: FiltersDep,
    unit: UnitParam = "department",
    weights: Annotated[str | None, Query(max_length=32)] = None,
) -> StreamingResponse:
    """The ranking as CSV; insufficient-data units follow the ranked ones without a rank."""
    result = await _ranking(ctx, period, filters, unit, weights)
    header = [
        "period",
        "unit",
        "weights_version",
        "rank",
        "key",
        "label_zh",
        "label_en",
        "composite",
        "response",
        "resolution",
        "satisfaction",
        "sample_size",
        "list",
    ]
    rows: list[list[Any]] = []
    for r in result.ranked:
        rows.append(
            [
                result.period.label,
                unit,
                result.weights.version,
                r.rank,
                r.key,
                r.label_zh,
                r.label_en,
                r.composite,
                r.components["response"],
                r.components["resolution"],
                r.components["satisfaction"],
                r.sample_size,
                r.list,
            ]
        )
    for u in result.insufficient:
        rows.append(
            [
                result.period.label,
                unit,
                result.weights.version,
                None,
                u.key,
                u.label_zh,
                u.label_en,
                None,
                None,
                None,
                None,
                u.sample_size,
                u.reason,
            ]
        )
    return csv_response(header, rows, f"ranking-{unit}-{result.period.label}")


@router.get(
    "/hotspots",
    response_model=hotspots.HotSpots,
    responses=ERRORS,
    description=(hotspots.__doc__ or "").strip(),
)
async def get_hotspots(
    ctx: EvaluationDep,
    period: Annotated[Literal["month", "quarter"], Query()] = "month",
    on: Annotated[date | None, Query()] = None,
) -> hotspots.HotSpots:
    """Category × area spikes against earlier years and a trailing baseline, recurring places,
    and the proactive-work proposals they lead to."""
    at = resolve(period, on, None, None, to_shanghai(ctx.now()).date())
    return await hotspots.find(ctx.reader, period=at, settings=ctx.settings)


@router.get("/hotspots.csv", responses=ERRORS)
async def get_hotspots_csv(
    ctx: EvaluationDep,
    period: Annotated[Literal["month", "quarter"], Query()] = "month",
    on: Annotated[date | None, Query()] = None,
) -> StreamingResponse:
    """The hot spots as CSV."""
    found = await get_hotspots(ctx, period, on)
    header, rows = hotspots.table(found)
    return csv_response(header, rows, f"hotspots-{found.period.label}")


@router.get("/exports/ticket-facts.csv", responses=ERRORS)
async def export_ticket_facts(
    ctx: EvaluationDep,
    start: Annotated[date | None, Query(description="received on or after (Shanghai)")] = None,
    end: Annotated[date | None, Query(description="received on or before (Shanghai)")] = None,
) -> StreamingResponse:
    """Every ticket fact for auditors, streamed in batches (any size). Facts carry no personal
    data: no name, phone, address or text, only codes, times, counts and the callback's
    answers."""
    period = None
    if start is not None or end is not None:
        period = resolve("day", None, start, end, to_shanghai(ctx.now()).date())

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(FACT_EXPORT_COLUMNS)
        yield "\ufeff" + buffer.getvalue()
        async for batch in ticket_fact_rows(ctx.reader, period=period):
            buffer.seek(0)
            buffer.truncate()
            for row in batch:
                writer.writerow(["" if v is None else v for v in row])
            yield buffer.getvalue()

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="ticket-facts.csv"'},
    )
