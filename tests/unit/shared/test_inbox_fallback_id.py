"""The id under which a record without a ``ce_id`` header is dead-lettered and remembered."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from shared.inbox import fallback_event_id


def _record(value: bytes, *, offset: int = 7, headers: tuple = ()) -> ConsumerRecord:
    return ConsumerRecord(
        topic="fengqiao.intake.tickets",
        partition=1,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"T-1",
        value=value,
        checksum=None,
        serialized_key_size=3,
        serialized_value_size=len(value),
        headers=headers,
    )


def test_a_redelivered_record_keeps_its_id() -> None:
    assert fallback_event_id(_record(b"not json")) == fallback_event_id(_record(b"not json"))


def test_another_record_at_the_same_place_after_a_broker_wipe_gets_its_own_id() -> None:
    """Offsets start again at 0 on a new broker: the place alone would name two records."""
    first = fallback_event_id(_record(b"not json"))
    assert fallback_event_id(_record(b"also not json")) != first
    assert fallback_event_id(_record(b"not json", headers=(("x", b"1"),))) != first
    assert fallback_event_id(_record(b"not json", offset=8)) != first


def test_the_dead_letter_id_fits_the_outbox_column() -> None:
    """Consumers are named after their services; the longest name is ``evaluation``."""
    for consumer in ("intake", "dispatch", "mediation", "evaluation"):
        event_id = f"dlq:{consumer}:{fallback_event_id(_record(b'x' * 10_000))}"
        assert len(event_id) <= 64, event_id
