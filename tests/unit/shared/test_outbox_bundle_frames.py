"""A bundle (one outbox row holding many events' records) gives the relay each record exactly as
a row of its own would, in order; events it cannot hold are left to rows of their own; a payload
cut short is refused, naming the problem."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events.base import Encoded, Record, encoded, utcnow
from shared.events.dispatch import TicketAssigned
from shared.events.intake import TicketReceived
from shared.outbox import RECORDS, bundle_row, record_row, row_headers, unpack_bundle

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def received(n: int, *, content: str = "塔山社区") -> TicketReceived:
    return TicketReceived(
        ticket_id=f"20261207-{n:07d}",
        channel="grid-patrol-batch",
        received_at=utcnow(),
        title="路灯不亮",
        content=content,
        category_code="0102",
    )


def sent_as_rows(events: list[Encoded]) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """What the relay sends for a row of each event (``record_row``)."""
    out = []
    for e in events:
        row = record_row(e.record, event_id=str(e.event_id), event_type=e.event_type, topic=e.topic)
        out.append(
            (row["key"].encode(), row["payload"], row_headers(row["headers"], row["header_block"]))
        )
    return out


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=40))
def test_a_bundle_sends_what_a_row_of_each_event_would(contents: list[str]) -> None:
    events = encoded([received(n, content=c) for n, c in enumerate(contents)])
    row = bundle_row(events, now=NOW)
    assert row is not None
    assert unpack_bundle(row["payload"]) == sent_as_rows(events)
    assert row[RECORDS] == len(events)
    first = events[0]
    assert (row["event_id"], row["event_type"], row["topic"], row["key"]) == (
        str(first.event_id),
        first.event_type,
        first.topic,
        first.record.key.decode(),
    )
    assert row["created_at"] == NOW and row["header_block"] is None


def test_the_caller_s_event_ids_name_the_row() -> None:
    events = encoded([received(1), received(2)])
    row = bundle_row(events, now=NOW, ids=["given-1", "given-2"])
    assert row is not None and row["event_id"] == "given-1"


def test_events_of_several_topics_or_types_are_not_bundled() -> None:
    assigned = TicketAssigned(
        ticket_id="20261207-0000009",
        dispatch_id="d-1",
        department_code="D01",
        department_tier="district",
        category_code="0102",
        channel="grid-patrol-batch",
    )
    assert bundle_row(encoded([received(1), assigned]), now=NOW) is None
    assert bundle_row([], now=NOW) is None


def test_headers_that_cannot_be_packed_are_not_bundled() -> None:
    (event,) = encoded([received(1)])
    record = Record(event.record.key, event.record.value, [("x-note", b"a\0b")])
    odd = dataclasses.replace(event, record=record)
    assert bundle_row([*encoded([received(2)]), odd], now=NOW) is None


def test_a_payload_cut_short_is_refused() -> None:
    row = bundle_row(encoded([received(1), received(2)]), now=NOW)
    assert row is not None
    with pytest.raises(ValueError, match="bytes past it"):
        unpack_bundle(row["payload"][:-5])
