"""Outbox rows store a record's headers as the relay hands them to the producer: whatever is
packed comes back byte for byte, events take the compact form, and rows in the earlier JSON
form still read as they did."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import encode
from shared.events.base import utcnow
from shared.events.intake import TicketReceived
from shared.outbox import (
    event_row,
    json_headers,
    pack_headers,
    record_row,
    row_headers,
    unpack_headers,
)

names = st.text(max_size=20)
values = st.binary(max_size=40)
headers_lists = st.lists(st.tuples(names, values), max_size=12)


def received(n: int) -> TicketReceived:
    return TicketReceived(
        ticket_id=f"20261206-{n:07d}",
        channel="hotline-12345-phone",
        received_at=utcnow(),
        title="路灯不亮",
        content="塔山社区",
        category_code="0102",
    )


@settings(max_examples=500, deadline=None)
@given(headers=headers_lists)
def test_any_headers_without_a_nul_come_back_as_they_were(
    headers: list[tuple[str, bytes]],
) -> None:
    block = pack_headers(headers)
    has_nul = any("\0" in name or b"\0" in value for name, value in headers)
    if has_nul:
        assert block is None
    else:
        assert block is not None and unpack_headers(block) == headers


@settings(max_examples=300, deadline=None)
@given(data=st.lists(values, min_size=8, max_size=8))
def test_cloudevents_headers_keep_their_values_alone_and_come_back(data: list[bytes]) -> None:
    names = [name for name, _ in encode(received(0)).headers]
    headers = list(zip(names, data, strict=True))
    block = pack_headers(headers)
    if any(b"\0" in value for value in data):
        assert block is None
        return
    assert block is not None and block.endswith(b"\0c")
    assert unpack_headers(block) == headers
    # One or more of the names otherwise, or in another order: named form, same headers.
    for other in (headers[:-1], headers[::-1], [*headers, ("x", b"")]):
        assert unpack_headers(pack_headers(other) or b"") == other


def test_an_event_row_holds_its_record_s_headers_compactly() -> None:
    event = received(1)
    row = event_row(event)
    assert row["headers"] == "" and row["header_block"] is not None
    assert row_headers(row["headers"], row["header_block"]) == encode(event).headers
    assert len(row["header_block"]) < len(json_headers(encode(event).headers))


def test_headers_a_block_cannot_hold_stay_json_and_rows_of_the_earlier_form_read_as_before() -> (
    None
):
    record = encode(received(2))
    odd = type(record)(record.key, record.value, [*record.headers, ("x-bin", b"a\0b")])
    row = record_row(odd, event_id=str(uuid.uuid4()), event_type="t", topic="intake")
    assert row["header_block"] is None
    assert row_headers(row["headers"], None) == odd.headers
    # A row written before blocks existed: its JSON, read as the relay always read it.
    assert row_headers(json_headers(record.headers), None) == record.headers


def test_non_utf8_header_bytes_survive_the_block() -> None:
    # A dead-lettered record keeps the original record's headers, whatever their bytes; JSON
    # text turned such bytes into U+FFFD.
    headers = [("ce_id", b"x"), ("x-origin", b"\xff\xfe\x80")]
    assert unpack_headers(pack_headers(headers) or b"") == headers
