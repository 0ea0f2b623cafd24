"""The events a batch of placements stages as their fields are written to the same outbox and
audit rows, byte for byte, as the models built from those fields; in the order they were made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import asyncpg
from sqlmodel import SQLModel

from services.dispatch import models, staging
from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.rows import start_clocks
from services.dispatch.models import (
    Dispatch,
    DispatchAction,
    DispatchClock,
    TicketRecord,
    outbox_table,
)
from services.dispatch.placement import dispatch_values
from services.dispatch.settings import DispatchSettings
from services.dispatch.staging import Staged, emit, emit_fields, new_row
from services.dispatch.transitions import SYSTEM, record
from services.dispatch.workflow import Status
from shared.bulk import Draft, draft_rows
from shared.events.base import Encoded, Event, encode, encode_fields, encoded
from shared.events.dispatch import DispatchSigned, MediationRequested, TicketAssigned
from shared.groupcommit import DirectInserts
from shared.groupcommit import _records as bound_records
from shared.outbox import Outbox, event_row

TEXT = st.text(max_size=12).filter(lambda t: not any(0xD800 <= ord(c) < 0xE000 for c in t))
ZONES = st.sampled_from(
    [UTC, ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/London"), timezone(timedelta(hours=-3.5))]
)
TIMES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=ZONES
)
CLOCKS = st.sampled_from(["sign_for", "first_contact", "feedback", "resolution", "report"])


def in_order(shape: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with the keys of ``shape`` in its order (hypothesis draws them in any order)."""
    return st.fixed_dictionaries(shape).map(lambda d: {k: d[k] for k in shape})


ASSIGNED = in_order(
    {
        "ticket_id": TEXT.map(lambda t: "T-" + t),
        "dispatch_id": TEXT,
        "department_code": TEXT,
        "department_tier": st.sampled_from(["city", "district", "town", "village", "grid"]),
        "area_code": st.none() | TEXT,
        "category_code": TEXT,
        "channel": TEXT,
        "handling_line": st.sampled_from(["normal", "task_force", "judicial", "mediation"]),
        "time_limit_profile": TEXT,
        "rule_id": st.none() | TEXT,
        "deadlines": st.dictionaries(CLOCKS, TIMES, max_size=5),
        "mode": st.sampled_from(["assign", "grab", "supervised", "reroute", "transfer"]),
        "supervised": st.booleans(),
        "focused": st.booleans(),
        "rules_version": st.none() | TEXT,
        "parent_dispatch_id": st.none() | TEXT,
    }
)
MEDIATION = in_order(
    {
        "ticket_id": TEXT.map(lambda t: "T-" + t),
        "dispatch_id": TEXT,
        "department_code": TEXT,
        "category_code": TEXT,
        "area_code": st.none() | TEXT,
        "requested_by": st.sampled_from(["routing", "department"]),
        "reason": st.none() | TEXT,
    }
)


def as_validated(cls: type[Event], written: Any, fields: dict[str, Any]) -> Event:
    """The model validated from the same fields, with the id and time the writer chose."""
    return cls.model_validate(
        {**fields, "event_id": written.event_id, "occurred_at": written.occurred_at}
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(ASSIGNED, min_size=1, max_size=4), st.lists(MEDIATION, min_size=1, max_size=2))
def test_assignments_written_from_their_fields_are_the_models_records(
    assigned: list[dict[str, Any]], mediation: list[dict[str, Any]]
) -> None:
    for cls, batch in ((TicketAssigned, assigned), (MediationRequested, mediation)):
        written = encode_fields(cls, batch)
        assert written is not None, cls
        for w, f in zip(written, batch, strict=True):
            event = as_validated(cls, w, f)
            assert w.record == encode(event)
            assert (w.event_type, w.topic, w.ticket_id) == (
                event.event_type,
                event.topic,
                getattr(event, "ticket_id", None),
            )


def assigned_fields(**change: Any) -> dict[str, Any]:
    return {
        "ticket_id": "T-1",
        "dispatch_id": "D-T-1-0a0b0c0d",
        "department_code": "town-streetworks",
        "department_tier": "town",
        "area_code": "grid-001",
        "category_code": "0102",
        "channel": "hotline-12345",
        "handling_line": "normal",
        "time_limit_profile": "standard",
        "rule_id": "r-lights",
        "deadlines": {
            "sign_for": datetime(2026, 12, 6, 3, 30, 1, 250, tzinfo=UTC),
            "resolution": datetime(2026, 12, 18, 17, 30, tzinfo=ZoneInfo("Asia/Shanghai")),
        },
        "mode": "assign",
        "supervised": False,
        "focused": False,
        "rules_version": "v3",
        "parent_dispatch_id": None,
        **change,
    }


@pytest.mark.parametrize(
    "deadlines",
    [
        {"sign_for": datetime(2026, 12, 6)},  # naive
        {"sign_for": "2026-12-06T03:30:00Z"},  # text, which the model would parse
        {1: datetime(2026, 12, 6, tzinfo=UTC)},  # a key that is not text
        # An offset with seconds: pydantic and orjson write it differently.
        {"sign_for": datetime(1900, 6, 1, tzinfo=ZoneInfo("Asia/Shanghai"))},
    ],
)
def test_deadlines_it_cannot_vouch_for_are_left_to_the_model(deadlines: Any) -> None:
    assert encode_fields(TicketAssigned, [assigned_fields(deadlines=deadlines)]) is None


def comparable(row: dict[str, Any], *, drop: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != drop}


async def test_a_batch_writes_the_rows_the_models_would_in_the_order_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    through_models: list[str] = []

    def spy(events: list[Event]) -> list[Encoded]:
        through_models.extend(e.event_type for e in events)
        return encoded(events)

    monkeypatch.setattr(staging, "encoded", spy)
    outbox = Outbox(outbox_table)
    assert outbox.audit is not None
    staged = Staged()
    signed = DispatchSigned(ticket_id="T-0", dispatch_id="D-T-0-00000000", department_code="x")
    mediation = {
        "ticket_id": "T-1",
        "dispatch_id": "D-T-1-0a0b0c0d",
        "department_code": "town-streetworks",
        "category_code": "0102",
        "area_code": None,
        "requested_by": "routing",
        "reason": "mediation line",
    }
    await emit(staged, outbox, signed)
    await emit_fields(
        staged,
        outbox,
        (TicketAssigned, assigned_fields()),
        (MediationRequested, mediation),
        (TicketAssigned, assigned_fields(ticket_id="T-2", deadlines={})),
    )
    rows = staged._outbox_rows(outbox)
    # Only the event staged as a model went through a model; the others straight from fields.
    assert through_models == ["dispatch.dispatch.signed"]
    written, audited = rows[outbox.table], rows[outbox.audit]
    assert [r["event_type"] for r in written] == [
        "dispatch.dispatch.signed",
        "dispatch.ticket.assigned",
        "dispatch.mediation.requested",
        "dispatch.ticket.assigned",
    ]
    fields = [None, assigned_fields(), mediation, assigned_fields(ticket_id="T-2", deadlines={})]
    classes = [None, TicketAssigned, MediationRequested, TicketAssigned]
    models: list[Event] = [signed]
    for cls, f, audit in zip(classes[1:], fields[1:], audited[1:], strict=True):
        assert cls is not None and f is not None
        models.append(
            cls.model_validate(
                {**f, "event_id": audit["event_id"], "occurred_at": audit["occurred_at"]}
            )
        )
    for row, model in zip(written, models, strict=True):
        assert comparable(row, drop="created_at") == comparable(event_row(model), drop="created_at")
    for row, expected in zip(audited, outbox.audit_rows(models), strict=True):
        assert comparable(row, drop="recorded_at") == comparable(expected, drop="recorded_at")


async def test_a_large_batch_copies_the_records_its_rows_would_insert() -> None:
    """The records ``COPY`` takes, read from the drafts, are the ones the insert path binds
    from the drafts' rows: the same tables, columns, order and values."""
    ctx = DispatchContext(DispatchSettings(load_organisation_on_startup=False))
    staged = Staged()
    now = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
    for n in range(3):
        ticket = new_row(
            staged,
            TicketRecord,
            ticket_id=f"T-{n}",
            channel="hotline-12345",
            category_code="0102",
            area_code=None if n else "grid-001",
            title="路灯不亮",
            facts={"text": "门口路灯坏了", "n": n},
            excluded=[],
            received_at=now - timedelta(minutes=n),
            routed_at=now,
        )
        values = dispatch_values(
            ticket,
            department="town-streetworks",
            line="normal",
            profile="standard",
            mode="assign",
            status=Status.ASSIGNED,
            now=now,
            rule_id="r-lights",
        )
        d = new_row(staged, Dispatch, **values)
        due = start_clocks(staged, ctx, d, now)
        record(staged, d, "assign", SYSTEM, before=None, after=d.status, now=now, note="n")
        await emit_fields(staged, ctx.outbox, (TicketAssigned, assigned_fields(ticket_id=f"T-{n}")))
    events = staged._outbox_rows(ctx.outbox)
    direct = DirectInserts(asyncpg.dialect())
    copies = staged._copies(direct, events)
    assert copies is not None
    rows = {
        model.__table__: draft_rows(drafts, model.__table__)  # type: ignore[attr-defined]
        for model, drafts in staged.drafts.items()
    } | events
    plans = direct.group_plans(rows)
    assert plans is not None
    assert [(plan.table.name, plan.keys, records) for plan, records in copies] == [
        (plan.table.name, plan.keys, bound_records(plan, rows[plan.table])) for plan in plans
    ]
    assert [plan.table.name for plan, _ in copies] == [
        "tickets",
        "dispatches",
        "dispatch_clocks",
        "dispatch_actions",
        "outbox",
        "audit_trail",
    ]
    assert "id" not in copies[3][0].keys  # numbered by the database
    assert due  # the profile's clocks were started, so their rows are compared too


def test_a_staged_row_is_the_draft_of_its_values() -> None:
    """``new_row`` on a batch makes each table's draft as ``Draft(model, **values)`` does: the
    same attributes (the model's defaults, its factories' values where none is given) and
    model; a factory's value is each draft's own, and the caller's values are not shared."""
    tables = [
        m
        for m in vars(models).values()
        if isinstance(m, type) and issubclass(m, SQLModel) and hasattr(m, "__table__")
    ]
    assert {TicketRecord, Dispatch, DispatchClock, DispatchAction} <= set(tables)
    given_ = {"ticket_id": "T-1", "title": "路灯", "facts": {"text": "x"}}
    for model in tables:
        values = {k: v for k, v in given_.items() if k in model.model_fields}
        staged = Staged()
        first = new_row(staged, model, **values)
        second = new_row(staged, model, **values)
        expected = Draft(model, **values)
        for draft in (first, second):
            assert type(draft) is Draft and draft._model is model
            assert draft.__dict__ == expected.__dict__
            assert draft.model_dump() == expected.model_dump()
        assert staged.drafts[model] == [first, second]
        for name, info in model.model_fields.items():
            if info.default_factory is not None and name not in values:
                assert getattr(first, name) is not getattr(second, name)
        first.title = "changed"
        assert second.__dict__ == expected.__dict__
