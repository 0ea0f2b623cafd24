"""The rebuild's fast decoding gives exactly what the consumer's ``decode`` gives, and leaves
anything unusual to it (so a bad record fails the same way)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.evaluation.rebuild import _decode
from shared.events.base import EventDecodeError, decode, encode
from tests.unit.evaluation.test_fold import life


@dataclass
class Rec:
    value: bytes
    headers: list[tuple[str, bytes]]
    key: bytes


EVENTS = life("T1")  # every kind of event a ticket's life brings


def record(event: object) -> Rec:
    r = encode(event)  # type: ignore[arg-type]
    return Rec(r.value, list(r.headers), r.key)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_the_fast_path_decodes_as_the_consumer_does(event: object) -> None:
    r = record(event)
    fast = _decode(r)
    assert fast == decode(r.value, r.headers, r.key) == event
    assert fast is not None and fast.model_dump_json() == event.model_dump_json()  # type: ignore[attr-defined]


def test_the_headers_win_over_a_payload_that_names_them_too() -> None:
    r = record(EVENTS[1])
    forged = Rec(
        r.value[:-1] + b',"event_id":"00000000-0000-0000-0000-000000000000"}', r.headers, r.key
    )
    assert _decode(forged) == decode(forged.value, forged.headers, forged.key) == EVENTS[1]


def test_a_bad_payload_fails_as_in_decode() -> None:
    r = record(EVENTS[1])
    broken = Rec(b'{"ticket_id": 5}', r.headers, r.key)
    with pytest.raises(EventDecodeError) as fast:
        _decode(broken)
    with pytest.raises(EventDecodeError) as full:
        decode(broken.value, broken.headers, broken.key)
    assert str(fast.value) == str(full.value)
