"""A unit of many rows hands its ticket rows over a column at a time (``Pipeline._columns``), its
events and audit rows too (``record_columns``, ``audit_columns``): the rows they stand for are
the rows a small unit makes one at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from bench.intake_inprocess import _NoStoredCandidates, _NumberedIds
from services.intake import pipeline as pipeline_module
from services.intake.canonical import AttachmentMeta, TicketDraft
from services.intake.channels import get_channel
from services.intake.models import metadata, outbox_table
from services.intake.pipeline import Pipeline, Prepared
from services.intake.repeats import RepeatPolicy
from shared.auth import Principal, Role
from shared.events.base import Encoded
from shared.groupcommit import Columns, Same
from shared.outbox import audit_columns, audit_row, record_columns, record_row

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
ADDRESSES = ("枫桥市越城区北海街道塔山社区8号", "府山街道西小路3号", None)


def _drafts(n: int) -> list[TicketDraft]:
    """Varied rows: repeats of earlier rows, missing and present optional fields, attachments."""
    channel = get_channel("grid-patrol-batch")
    out = []
    for i in range(n):
        out.append(
            TicketDraft(
                channel_code=channel.code,
                external_id=f"row-{i}",
                received_at=NOW - timedelta(minutes=i % 5),
                citizen_name=None if i % 4 == 0 else "张先生",
                citizen_phone=f"1391234{i % 7:04d}",
                citizen_email="a@example.com" if i % 9 == 0 else None,
                title="井盖缺失" if i % 3 else "路灯不亮",
                content=f"巡查发现第{i % 6}处井盖缺失，已设置临时围挡。",
                address=ADDRESSES[i % len(ADDRESSES)],
                category_code=None if i % 5 == 0 else "0101",
                urgency="urgent" if i % 11 == 0 else "normal",
                enterprise_name="枫桥制造" if i % 13 == 0 else None,
                attachments=(
                    (
                        AttachmentMeta(
                            filename="a.jpg", content_type="image/jpeg", size=3, sha256="0" * 64
                        ),
                    )
                    if i % 8 == 0
                    else ()
                ),
                extra={"巡查员": f"网格员{i % 4}"} if i % 2 else {},
            )
        )
    return out


def _prepare(drafts: list[TicketDraft]) -> list[Prepared]:
    channel = get_channel("grid-patrol-batch")
    pipeline = Pipeline(
        salt="s" * 64,
        ids=_NumberedIds(),  # type: ignore[arg-type]
        loader=_NoStoredCandidates(
            create_async_engine("sqlite+aiosqlite://"), policy=RepeatPolicy(), per_key=5
        ),
    )
    (outcome,) = asyncio.run(pipeline.prepare_group([[(channel, d) for d in drafts]], now=NOW))
    assert isinstance(outcome, list), outcome
    return outcome


def test_a_large_units_columns_are_the_rows_a_small_unit_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drafts = _drafts(pipeline_module.COLUMNS_MIN_ROWS + 30)
    by_columns = _prepare(drafts)
    assert all(isinstance(p.stored, tuple) for p in by_columns)
    assert any(p.verdict.repeat_of for p in by_columns), "the rows should repeat each other"
    monkeypatch.setattr(pipeline_module, "COLUMNS_MIN_ROWS", 10**9)
    by_rows = _prepare(drafts)
    assert all(isinstance(p.stored, dict) for p in by_rows)
    assert [p.row for p in by_columns] == [p.row for p in by_rows]
    (block, _) = by_columns[0].stored  # type: ignore[misc]
    assert block.dicts() == [p.row for p in by_rows]


def _events(n: int) -> list[Encoded]:
    prepared = _prepare(_drafts(n))
    return [p.event for p in prepared]


@pytest.mark.parametrize("actor", [None, Principal(Role.GRID_WORKER, "patrol-7", "G01")])
def test_outbox_and_audit_columns_are_their_rows(actor: Principal | None) -> None:
    events = _events(70)
    audit = metadata.tables["audit_trail"]
    outbox = record_columns(outbox_table, events, now=NOW)
    assert outbox.dicts() == [
        {
            **record_row(
                e.record, event_id=str(e.event_id), event_type=e.event_type, topic=e.topic
            ),
            "created_at": NOW,
        }
        for e in events
    ]
    assert audit_columns(audit, events, actor, now=NOW).dicts() == [
        audit_row(e, actor, now=NOW)  # type: ignore[arg-type]
        for e in events
    ]


def test_columns_stand_for_their_rows() -> None:
    block = Columns(outbox_table, 3, {"a": [1, 2, 3], "b": Same("x"), "c": ("p", None, "r")})
    assert block.keys == ("a", "b", "c")
    assert block.column("b") == ["x", "x", "x"]
    assert block.dicts() == [
        {"a": 1, "b": "x", "c": "p"},
        {"a": 2, "b": "x", "c": None},
        {"a": 3, "b": "x", "c": "r"},
    ]
