"""Every registered event survives the CloudEvents Kafka binding unchanged."""

from __future__ import annotations

import typing
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from shared.events import EventDecodeError, UnknownEventType, decode, encode, registry
from shared.events.base import Event, _decode_ours, encode_parts, header


def _sample(annotation: Any) -> Any:
    """A plausible value for a field annotation (enough to build any registered event)."""
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return get_args(annotation)[-1]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in get_args(annotation) if a is not type(None)]
        return _sample(non_none[0])
    if origin is tuple:
        return ()
    if origin is dict:
        return {}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.model_validate(
            {
                n: _sample(f.annotation)
                for n, f in annotation.model_fields.items()
                if f.is_required()
            }
        )
    if annotation is bool:
        return True
    if annotation is int:
        return 3
    if annotation is float:
        return 1.5
    if annotation is str:
        return "0101"
    if annotation is date:
        return date(2026, 1, 2)
    if annotation is datetime or "Datetime" in str(annotation) or "datetime" in str(annotation):
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    raise AssertionError(f"no sample for {annotation}")


TZ8 = timezone(timedelta(hours=8))


def build(cls: type[Event]) -> Event:
    values = {
        name: _sample(f.annotation)
        for name, f in cls.model_fields.items()
        if name not in ("event_id", "occurred_at")
    }
    return cls(**values)


@pytest.mark.parametrize("ce_type", sorted(registry()))
def test_every_registered_event_round_trips(ce_type: str) -> None:
    cls = registry()[ce_type]
    event = build(cls)
    record = encode(event)
    assert header(record.headers, "ce_type") == ce_type
    assert header(record.headers, "ce_specversion") == "1.0"
    assert header(record.headers, "ce_id") == str(event.event_id)
    assert header(record.headers, "content-type") == "application/json"
    assert record.key == event.partition_key().encode()
    assert decode(record.value, record.headers, record.key) == event


@pytest.mark.parametrize("ce_type", sorted(registry()))
@pytest.mark.parametrize(
    "occurred_at",
    [datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), datetime(2026, 1, 2, 11, 4, 5, tzinfo=TZ8)],
)
def test_the_direct_encoding_is_the_sdks_record(ce_type: str, occurred_at: datetime) -> None:
    event = build(registry()[ce_type]).model_copy(update={"occurred_at": occurred_at})
    assert encode(event) == encode_parts(
        event_id=str(event.event_id),
        ce_type=event.cloudevent_type(),
        source=event.source,
        occurred_at=event.occurred_at,
        key=event.partition_key(),
        data=event.data_json(),
    )


@pytest.mark.parametrize("ce_type", sorted(registry()))
def test_our_records_decode_directly_as_the_sdk_decodes_them(ce_type: str) -> None:
    event = build(registry()[ce_type])
    record = encode(event)
    direct = _decode_ours(record.value, record.headers)
    assert direct is not None
    # A header the encoder never writes sends the record through the SDK's validation.
    through_sdk = decode(record.value, [*record.headers, ("ce_traceparent", b"00-1")], record.key)
    assert direct == through_sdk == event
    assert direct.model_dump_json() == event.model_dump_json()


@pytest.mark.parametrize(
    "change",
    [
        {"ce_specversion": b"0.3"},
        {"ce_source": b""},
        {"ce_id": b""},
        {"ce_time": b"1700000000"},
        {"ce_time": b"2026-01-02T03:04:05"},  # no offset
    ],
)
def test_a_record_unlike_ours_is_left_to_the_sdk(change: dict[str, bytes]) -> None:
    from shared.events.intake import TicketReceived

    record = encode(build(TicketReceived))
    headers = [(k, change.get(k, v)) for k, v in record.headers]
    assert _decode_ours(record.value, headers) is None


def test_registry_covers_every_service_that_emits() -> None:
    sources = {cls.source for cls in registry().values()}
    assert sources == {
        "/fengqiao/intake",
        "/fengqiao/dispatch",
        "/fengqiao/mediation",
        "/fengqiao/evaluation",
    }


def test_ticket_events_are_keyed_by_ticket_id() -> None:
    from shared.events.intake import TicketReceived

    event = build(TicketReceived)
    assert encode(event).key == b"0101"  # the sample ticket id


def test_payload_that_fails_validation_names_the_field() -> None:
    from shared.events.intake import TicketReceived

    record = encode(build(TicketReceived))
    broken = record.value.replace(b'"title":"0101",', b"")
    with pytest.raises(EventDecodeError, match="title"):
        decode(broken, record.headers, record.key)


def test_unknown_type_is_refused() -> None:
    from shared.events.intake import TicketReceived

    record = encode(build(TicketReceived))
    headers = [(k, b"cn.fengqiao.nobody.v9" if k == "ce_type" else v) for k, v in record.headers]
    with pytest.raises(UnknownEventType, match="nobody"):
        decode(record.value, headers, record.key)


def test_record_without_cloudevents_headers_is_refused() -> None:
    with pytest.raises(EventDecodeError):
        decode(b"{}", [], None)


def test_events_are_frozen() -> None:
    from shared.events.intake import TicketReceived

    event = build(TicketReceived)
    with pytest.raises(Exception, match="frozen"):
        event.title = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("ce_type", sorted(registry()))
def test_events_are_read_without_the_string_cache(ce_type: str) -> None:
    """Each decode reads its payload's strings afresh rather than through pydantic's cache of
    them: their hashing and look-ups cost more than they save on a record's few repeats (5–10 %
    of ``decode``), and a string read is the same value either way."""
    cls = registry()[ce_type]
    assert cls.model_config.get("cache_strings") is False
    event = build(cls)
    assert decode(*_value_headers(encode(event))) == event


def _value_headers(record: Any) -> tuple[bytes, list[tuple[str, bytes]]]:
    return record.value, record.headers


def test_dump_json_many_is_each_events_own_dump() -> None:
    """The ledger's payloads written a class at a time are each event's ``model_dump_json``,
    in the events' order, whatever the classes' mix — also where a string holds the text that
    separates two events in one dump."""
    from shared.events.base import dump_json_many
    from shared.events.intake import TicketReceived

    events: list[Event] = [build(cls) for cls in registry().values() for _ in range(3)]
    tricky = build(TicketReceived).model_copy(update={"title": '},{"event_id":"x"'})
    events += [tricky, build(TicketReceived)]
    events = events[1::2] + events[::2]
    assert dump_json_many(events) == [e.model_dump_json() for e in events]
    assert dump_json_many([]) == []
    assert dump_json_many(events[:1]) == [events[0].model_dump_json()]
