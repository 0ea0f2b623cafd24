"""The working calendar as an operational concern: chinesecalendar 1.11.0 ends with 2026, and
15-working-day clocks started in December reach into 2027. Beyond the data the service counts
Monday–Friday, logs a warning and counts it in a metric; operators enter the new schedule in the
overrides file; a strict deployment can refuse instead."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.profiles import ClockName, default_profiles
from services.dispatch.settings import DispatchSettings
from shared.clock import ManualClock
from shared.workcalendar import (
    SHANGHAI,
    CalendarError,
    CalendarRangeError,
    build_calendar,
    load_overrides,
)
from tests.integration.dispatch.support import running
from tests.support import Database

ENTERPRISE = default_profiles().get("enterprise_2115")
# Monday 14 December 2026, 10:00: 15 working days later is in January 2027.
DECEMBER = datetime(2026, 12, 14, 10, 0, tzinfo=SHANGHAI)
PUBLISHED_2027 = """
version: "2027-published"
beyond_data: weekdays
holidays: [2027-01-01]
workdays: []
complete_years: [2027]
"""


def _context(overrides: str | None = None) -> DispatchContext:
    calendar = build_calendar(load_overrides(overrides))
    ctx = DispatchContext(DispatchSettings(), clock=ManualClock(DECEMBER), calendar=calendar)
    ctx.bind_metrics(CollectorRegistry())
    return ctx


def _fallback_count(ctx: DispatchContext, year: str) -> float:
    assert ctx.metrics is not None
    return float(ctx.metrics.deadlines_on_fallback.labels(year)._value.get())


def test_past_the_data_the_statutory_fallback_warns_once_and_counts_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = _context()
    with caplog.at_level(logging.WARNING, logger="services.dispatch.deadlines.timing"):
        due = ctx.deadlines.of(ENTERPRISE, DECEMBER)
        again = ctx.deadlines.of(ENTERPRISE, DECEMBER + timedelta(days=1))
    # 15 working days from Mon 14 Dec 2026: 13 in December (to Thu 31 Dec), then Mon 4 and
    # Tue 5 Jan 2027 — New Year's Day (Fri 1 Jan) off by the statutory fallback, as the
    # published schedule will have it; the swapped workdays are not known until then.
    assert due[ClockName.RESOLUTION] == datetime(2027, 1, 5, 17, 30, tzinfo=SHANGHAI)
    assert again[ClockName.RESOLUTION] == datetime(2027, 1, 6, 17, 30, tzinfo=SHANGHAI)
    warnings = [r for r in caplog.records if "calendar fallback" in r.getMessage()]
    assert len(warnings) == 1  # once per year per process, not once per ticket
    assert "no data for 2027" in warnings[0].getMessage()
    assert _fallback_count(ctx, "2027") == 2
    # Clocks that stay inside 2026 never touch the fallback.
    ctx.deadlines.of(default_profiles().get("standard"), DECEMBER)
    assert _fallback_count(ctx, "2027") == 2


def test_deadlines_remembered_for_a_batch_still_count_each_fallback() -> None:
    # A batch starts many dispatches at one instant: the deadlines are computed once per
    # profile, but every dispatch that runs past the data is counted, and a later start or
    # another calendar computes afresh.
    ctx = _context()
    first = ctx.deadlines.of(ENTERPRISE, DECEMBER)
    first[ClockName.RESOLUTION] = DECEMBER  # a caller's copy: the next dispatch is not touched
    second = ctx.deadlines.of(ENTERPRISE, DECEMBER)
    assert second[ClockName.RESOLUTION] == datetime(2027, 1, 5, 17, 30, tzinfo=SHANGHAI)
    assert _fallback_count(ctx, "2027") == 2
    ctx.deadlines.calendar = build_calendar(load_overrides(PUBLISHED_2027))
    published = ctx.deadlines.of(ENTERPRISE, DECEMBER)
    assert published[ClockName.RESOLUTION] == datetime(2027, 1, 5, 17, 30, tzinfo=SHANGHAI)
    assert _fallback_count(ctx, "2027") == 2  # 2027 is complete now: no fallback
    later = ctx.deadlines.of(ENTERPRISE, DECEMBER + timedelta(days=1))
    assert later[ClockName.RESOLUTION] == datetime(2027, 1, 6, 17, 30, tzinfo=SHANGHAI)


def test_a_batchs_started_clocks_are_the_deadlines_in_utc_and_as_text() -> None:
    # A staged batch writes each clock row's times in UTC and each dispatch's deadlines as text
    # from ``started``, made once per profile and start: the same instants as ``of`` (which
    # keeps the calendar's zone, for the events), every call counted like ``of``.
    ctx = _context()
    for profile in default_profiles().profiles.values():
        for start in (DECEMBER, DECEMBER + timedelta(hours=7, minutes=13)):
            due = ctx.deadlines.of(profile, start)
            started = ctx.deadlines.started(profile, start)
            assert started.due == due
            assert [name for name, _ in started.utc] == [name.value for name in due]
            for (name, at), expected in zip(started.utc, due.values(), strict=True):
                assert at == expected and at.tzinfo is UTC, (profile.code, name)
            assert started.text == {name.value: at.isoformat() for name, at in due.items()}
            assert ctx.deadlines.started(profile, start) is started  # remembered per start
    before = _fallback_count(ctx, "2027")
    ctx.deadlines.started(ENTERPRISE, DECEMBER)
    ctx.deadlines.started(ENTERPRISE, DECEMBER)
    assert _fallback_count(ctx, "2027") == before + 2


def test_operators_enter_the_published_schedule_in_the_overrides_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = _context(PUBLISHED_2027)
    with caplog.at_level(logging.WARNING):
        due = ctx.deadlines.of(ENTERPRISE, DECEMBER)
    assert due[ClockName.RESOLUTION] == datetime(2027, 1, 5, 17, 30, tzinfo=SHANGHAI)
    assert not [r for r in caplog.records if "calendar fallback" in r.getMessage()]
    assert _fallback_count(ctx, "2027") == 0
    described = ctx.deadlines.calendar.describe()
    assert described["covered_through_year"] == 2027
    assert described["fallback_from"] == "2028-01-01"
    assert described["extra_holidays"] == ["2027-01-01"]


def test_a_strict_deployment_refuses_dates_beyond_the_data() -> None:
    ctx = _context(
        "version: strict\nbeyond_data: raise\nholidays: []\nworkdays: []\ncomplete_years: []\n"
    )
    with pytest.raises(CalendarRangeError, match="no official calendar data for 2027-01-01"):
        ctx.deadlines.of(ENTERPRISE, DECEMBER)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: x\nholidays: [2027-01-01]\nworkdays: [2027-01-01]\n", "2027-01-01 is listed"),
        ("version: x\nholidays: [not-a-date]\n", "holidays[0]"),
        ("version: x\nbeyond_data: guess\n", "beyond_data"),
        ("holidays: [", "does not parse"),
    ],
)
def test_a_bad_overrides_file_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(CalendarError, match="calendar overrides refused") as refused:
        load_overrides(text)
    assert reason in str(refused.value) or any(reason in str(p) for p in refused.value.problems)


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=date(2004, 1, 1), max_value=date(2026, 12, 31)))
def test_inside_the_data_the_operated_calendar_is_the_official_one(day: date) -> None:
    assert build_calendar(load_overrides()).is_workday(day) == chinese_calendar.is_workday(day)


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=date(2027, 1, 1), max_value=date(2027, 12, 31)))
def test_a_completed_override_year_is_its_holidays_workdays_and_weekdays(day: date) -> None:
    text = PUBLISHED_2027.replace("workdays: []", "workdays: [2027-02-14]")
    calendar = build_calendar(load_overrides(text))
    expected = day == date(2027, 2, 14) or (day.weekday() < 5 and day != date(2027, 1, 1))
    assert calendar.is_workday(day) == expected
    assert not calendar.is_fallback(day)


async def test_the_service_runs_on_the_configured_overrides_file(
    broker: Any, sqlite_db: Database, tmp_path: Path
) -> None:
    overrides = tmp_path / "calendar.yaml"
    overrides.write_text(PUBLISHED_2027, encoding="utf-8")
    clock = ManualClock(DECEMBER)
    async with running(sqlite_db, broker.bootstrap, clock=clock, calendar_file=overrides) as env:
        env.bus = False
        described = (await env.client.get("/calendar")).json()
        assert described["overrides_version"] == "2027-published"
        ticket = await env.ticket(category="0204", grid="339904001001001", is_enterprise=True)
        (d,) = await env.dispatches(ticket)
        assert d["time_limit_profile"] == "enterprise_2115"
        resolution = {c["clock"]: c for c in (await env.detail(d["dispatch_id"]))["clocks"]}[
            "resolution"
        ]
        assert resolution["due_at"] == "2027-01-05T09:30:00Z"  # 17:30 in Shanghai
        metrics = (await env.client.get("/metrics")).text
        assert "fengqiao_dispatch_calendar_days_covered 382.0" in metrics  # to 31 Dec 2027
        assert 'fengqiao_dispatch_deadlines_on_fallback_total{year="2027"}' not in metrics


async def test_the_service_counts_fallback_deadlines_on_its_metrics(
    broker: Any, sqlite_db: Database
) -> None:
    async with running(sqlite_db, broker.bootstrap, clock=ManualClock(DECEMBER)) as env:
        env.bus = False
        await env.ticket(category="0204", grid="339904001002001", is_enterprise=True)
        metrics = (await env.client.get("/metrics")).text
        assert 'fengqiao_dispatch_deadlines_on_fallback_total{year="2027"} 1.0' in metrics
        assert "fengqiao_dispatch_calendar_days_covered 17.0" in metrics
