"""Rebuild every projection from scratch by replaying the intake, dispatch and mediation topics
from their first retained record.

Two passes, both in bulk: the records go into an emptied ledger (once per event id); then the
ledger is read back in fact-key order and each ticket or case is folded once, with the same
``fold_*`` and ``*_shares`` the live handlers use, and the cells summed in memory. So rebuilt
equals live, row for row (a test checks it), and it is much faster than replaying through the
handlers. The live consumer's offsets are untouched: it carries on from where it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.evaluation import cells
from services.evaluation.context import evaluation_calendar
from services.evaluation.facts import fold_case, fold_ticket
from services.evaluation.handlers import FOLDED
from services.evaluation.metrics_registry import COUNTERS
from services.evaluation.models import (
    DIMENSIONS,
    CaseFact,
    DispatchFact,
    TicketFact,
    cells_table,
    contributions_table,
    handling_table,
    ledger_table,
)
from services.evaluation.service import CASE, fact_key
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.bus import topic_name
from shared.events import DISPATCH_TOPIC, INTAKE_TOPIC, MEDIATION_TOPIC
from shared.events.base import Event, EventDecodeError, UnknownEventType, decode, registry
from shared.workcalendar import WorkCalendar

Progress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: stage "read" (records) or "fold" (facts)."""

BATCH = 2000
TOPICS = (INTAKE_TOPIC, DISPATCH_TOPIC, MEDIATION_TOPIC)
TABLES = (
    ledger_table,
    contributions_table,
    handling_table,
    cells_table,
    TicketFact.__table__,  # type: ignore[attr-defined]
    DispatchFact.__table__,  # type: ignore[attr-defined]
    CaseFact.__table__,  # type: ignore[attr-defined]
)


@dataclass
class Report:
    records: int = 0
    events: int = 0
    skipped: int = 0
    facts: int = 0
    cells: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _quiet(stage: str, done: int, total: int | None) -> None:
    """No progress display."""


async def records(settings: EvaluationSettings, *, idle_s: float = 3.0) -> AsyncIterator[list[Any]]:
    """Every retained record of the three topics, in batches, until the end offsets seen at the
    start are reached (or nothing arrives for ``idle_s``: some brokers misreport end offsets)."""
    consumer = AIOKafkaConsumer(
        *(topic_name(settings, t) for t in TOPICS),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="evaluation-rebuild",
    )
    await consumer.start()
    try:
        ends: dict[Any, int] = {}
        quiet_since = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            if not ends and consumer.assignment():
                ends = await consumer.end_offsets(list(consumer.assignment()))
            got = [r for rs in batches.values() for r in rs]
            if got:
                quiet_since = time.monotonic()
                yield got
            done = bool(ends) and all(
                await asyncio.gather(*(_reached(consumer, tp, end) for tp, end in ends.items()))
            )
            if done or time.monotonic() - quiet_since > idle_s:
                return
    finally:
        await consumer.stop()


async def _reached(consumer: AIOKafkaConsumer, tp: Any, end: int) -> bool:
    return bool(await consumer.position(tp) >= end)


async def rebuild(
    settings: EvaluationSettings,
    *,
    progress: Progress = _quiet,
    source: AsyncIterator[list[Any]] | None = None,
    engine: AsyncEngine | None = None,
) -> Report:
    """Empty the projections and rebuild them from the topics (or ``source`` batches)."""
    own = engine is None
    engine = engine or db.create_engine(settings)
    report = Report()
    calendar = evaluation_calendar(settings)
    try:
        async with engine.begin() as conn:
            for table in TABLES:
                await conn.execute(delete(table))
        started = time.monotonic()
        await _read(engine, source or records(settings), report, progress)
        report.seconds["read"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        await _fold(engine, calendar, report, progress)
        report.seconds["fold"] = round(time.monotonic() - started, 2)
    finally:
        if own:
            await engine.dispose()
    return report


async def _read(
    engine: AsyncEngine, source: AsyncIterator[list[Any]], report: Report, progress: Progress
) -> None:
    folded = {cls.cloudevent_type() for cls in FOLDED}
    for_insert = _insert_ignoring(engine)
    async for batch in source:
        rows: list[dict[str, Any]] = []
        for record in batch:
            report.records += 1
            try:
                event = decode(record.value, record.headers, record.key)
            except (UnknownEventType, EventDecodeError):
                report.skipped += 1
                continue
            key = fact_key(event)
            if key is None or event.cloudevent_type() not in folded:
                continue
            rows.append(_ledger_row(event, key))
        if rows:
            async with engine.begin() as conn:
                await conn.execute(for_insert, rows)
            report.events += len(rows)
        progress("read", report.records, None)


def _ledger_row(event: Event, key: str) -> dict[str, Any]:
    return {
        "event_id": str(event.event_id),
        "fact_key": key,
        "event_type": event.cloudevent_type(),
        "occurred_at": event.occurred_at,
        "payload": event.model_dump_json(),
    }


def _insert_ignoring(engine: AsyncEngine) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(ledger_table).on_conflict_do_nothing(index_elements=["event_id"])


class _Writer:
    """Facts, contributions and summed cells, written in batches."""

    def __init__(self) -> None:
        self.rows: dict[Any, list[dict[str, Any]]] = {}
        self.cells: dict[str, dict[str, Any]] = {}
        self.histogram: dict[tuple[str, int, str, date], int] = {}

    def add(self, table: Any, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def share(self, share: cells.Share) -> None:
        cell = self.cells.get(share.cell_key)
        if cell is None:
            cell = dict.fromkeys(COUNTERS, 0)
            cell.update(zip(DIMENSIONS, share.dims, strict=True))
            cell.update(cell_key=share.cell_key, grain=share.grain, period_start=share.period_start)
            self.cells[share.cell_key] = cell
        for name, value in share.counters.items():
            cell[name] += value
        if share.centidays is not None:
            key = (share.cell_key, share.centidays, share.grain, share.period_start)
            self.histogram[key] = self.histogram.get(key, 0) + 1

    async def flush(self, conn: AsyncConnection, *, final: bool = False) -> None:
        for table, rows in self.rows.items():
            if rows:
                await conn.execute(insert(table), rows)
        self.rows = {}
        if final:
            cell_rows = list(self.cells.values())
            for i in range(0, len(cell_rows), BATCH):
                await conn.execute(insert(cells_table), cell_rows[i : i + BATCH])
            h_rows = [
                {"cell_key": k, "centidays": c, "grain": g, "period_start": p, "n": n}
                for (k, c, g, p), n in self.histogram.items()
            ]
            for i in range(0, len(h_rows), BATCH):
                await conn.execute(insert(handling_table), h_rows[i : i + BATCH])


async def _fold(
    engine: AsyncEngine, calendar: WorkCalendar, report: Report, progress: Progress
) -> None:
    """Read the ledger back in (fact key, event id) pages, each in a short transaction of its
    own (a long read would hold SQLite's writers off), and fold every complete key."""
    classes = registry()
    writer = _Writer()
    c = ledger_table.c
    after: tuple[str, str] = ("", "")
    carried_key: str | None = None
    carried: list[Event] = []
    while True:
        query = (
            select(c.fact_key, c.event_id, c.event_type, c.payload)
            .where(tuple_(c.fact_key, c.event_id) > tuple_(*after))
            .order_by(c.fact_key, c.event_id)
            .limit(BATCH * 5)
        )
        async with engine.connect() as conn:
            page = (await conn.execute(query)).all()
        for key, _event_id, ce_type, payload in page:
            if key != carried_key:
                if carried_key is not None:
                    _fold_one(carried_key, carried, calendar, writer)
                    report.facts += 1
                carried_key, carried = key, []
            carried.append(classes[ce_type].model_validate_json(payload))
        if page:
            after = (page[-1][0], page[-1][1])
            async with engine.begin() as conn:
                await writer.flush(conn)
            progress("fold", report.facts, None)
            continue
        if carried_key is not None:
            _fold_one(carried_key, carried, calendar, writer)
            report.facts += 1
        async with engine.begin() as conn:
            await writer.flush(conn, final=True)
        report.cells = len(writer.cells)
        progress("fold", report.facts, report.facts)
        return


def _fold_one(key: str, events: list[Event], calendar: WorkCalendar, writer: _Writer) -> None:
    if key.startswith(CASE):
        case = fold_case(key[len(CASE) :], events)
        writer.add(CaseFact.__table__, case.model_dump())  # type: ignore[attr-defined]
        shares = cells.case_shares(case)
    else:
        fold = fold_ticket(key[2:], events, calendar=calendar)
        writer.add(TicketFact.__table__, fold.ticket.model_dump())  # type: ignore[attr-defined]
        for row in fold.dispatches:
            writer.add(DispatchFact.__table__, row.model_dump())  # type: ignore[attr-defined]
        shares = cells.ticket_shares(fold)
    for share in shares:
        writer.share(share)
    writer.add(contributions_table, {"fact_key": key, "cells": [s.stored() for s in shares]})
