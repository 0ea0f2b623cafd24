"""Events written straight from their fields are the records ``encode`` writes for the model
validated from the same fields; fields the writer cannot vouch for go the model's way."""

from __future__ import annotations

import copy
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.normalize import Scrubbed
from shared.events import decode, encode, registry
from shared.events.base import Event, _payload_check, _payloads, encode_fields, encoded
from shared.events.intake import FeedbackReceived, TicketReceived

# Any text but lone surrogates (orjson refuses them, as pydantic does), with what a JSON writer
# must escape or could mistake for structure: quotes, backslashes, control characters, the
# separator between two events' objects, and non-ASCII.
TEXT = (
    st.text(max_size=12)
    | st.lists(
        st.sampled_from(['"', "\\", "\n", "\x00", "\u2028", ',{"ticket_id":', "}", "路灯", "é"]),
        max_size=4,
    ).map("".join)
).filter(lambda t: not any(0xD800 <= ord(c) < 0xE000 for c in t))
OPTIONAL_TEXT = st.none() | TEXT | TEXT.map(Scrubbed)
ZONES = st.sampled_from(
    [UTC, ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/London"), timezone(timedelta(hours=-3.5))]
)
TIMES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=ZONES
)
COORDINATE = st.none() | st.floats(-180, 180, allow_nan=False)


def in_order(shape: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with the keys of ``shape`` in its order (hypothesis draws them in any order)."""
    return st.fixed_dictionaries(shape).map(lambda d: {k: d[k] for k in shape})


def citizen() -> st.SearchStrategy[dict[str, Any]]:
    return in_order(
        {
            "display_name": OPTIONAL_TEXT,
            "phone_masked": OPTIONAL_TEXT,
            "citizen_hash": OPTIONAL_TEXT,
        }
    )


def location() -> st.SearchStrategy[dict[str, Any]]:
    return in_order(
        {
            "address": OPTIONAL_TEXT,
            "longitude": COORDINATE,
            "latitude": COORDINATE,
            "grid_code": OPTIONAL_TEXT,
            "area_code": OPTIONAL_TEXT,
        }
    )


TICKET_FIELDS = in_order(
    {
        "ticket_id": TEXT.map(lambda t: "20261205-" + t),
        "channel": TEXT,
        "received_at": TIMES,
        "title": TEXT.map(Scrubbed),
        "content": TEXT.map(Scrubbed),
        "citizen": citizen(),
        "location": location(),
        "category_code": TEXT,
        "urgency": st.sampled_from(["normal", "urgent", "critical"]),
        "is_enterprise": st.booleans(),
        "repeat_of": st.none() | TEXT,
        "repeat_count": st.integers(0, 10**6),
        "external_id": OPTIONAL_TEXT,
        "attachments": st.just(()),
        "time_limit_profile": TEXT,
        "category_source": st.sampled_from([None, "channel", "classifier"]),
    }
)


def as_validated(written: Any, fields: dict[str, Any]) -> Event:
    """The model validated from the same fields, with the id and time the writer chose."""
    return TicketReceived.model_validate(
        {**fields, "event_id": written.event_id, "occurred_at": written.occurred_at}
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(TICKET_FIELDS, min_size=1, max_size=12))
def test_written_records_are_the_validated_events_records(fields: list[dict[str, Any]]) -> None:
    written = encode_fields(TicketReceived, fields)
    assert written is not None
    for w, f in zip(written, fields, strict=True):
        event = as_validated(w, f)
        # Key, payload and every header, in order, byte for byte.
        assert w.record == encode(event)
        # Consumers decode it as they decode the model's own record (a time in a zone's gap
        # or fold compares unequal to its decoded fixed-offset twin, whichever wrote it).
        reference = encode(event)
        assert decode(w.record.value, w.record.headers, w.record.key) == decode(
            reference.value, reference.headers, reference.key
        )
        assert str(w.event_id) == str(event.event_id)
        assert (w.event_type, w.topic, w.ticket_id) == (
            event.event_type,
            event.topic,
            event.ticket_id,
        )
        # The same bytes, so it decodes to what the validated event's record decodes to.
        assert w.record.value == event.data_json()
    # Each event its own id, as the model's default gives (the time is the call's).
    assert len({w.event_id for w in written}) == len(written)


def test_encoded_events_carry_their_records() -> None:
    event = TicketReceived.model_validate(ticket_fields())
    (e,) = encoded([event])
    assert (e.event_id, e.occurred_at, e.ticket_id, e.record) == (
        event.event_id,
        event.occurred_at,
        event.ticket_id,
        encode(event),
    )


def ticket_fields() -> dict[str, Any]:
    return {
        "ticket_id": "20261205-0000001",
        "channel": "grid-patrol-batch",
        "received_at": datetime(2026, 12, 5, tzinfo=UTC),
        "title": "路灯不亮",
        "content": "门口路灯坏了",
        "citizen": {"display_name": None, "phone_masked": None, "citizen_hash": None},
        "location": {
            "address": None,
            "longitude": 120.5,
            "latitude": 30.1,
            "grid_code": None,
            "area_code": None,
        },
        "category_code": "0102",
        "urgency": "normal",
        "is_enterprise": False,
        "repeat_of": None,
        "repeat_count": 0,
        "external_id": None,
        "attachments": (),
        "time_limit_profile": "standard",
        "category_source": "channel",
    }


def test_plain_fields_are_written() -> None:
    assert encode_fields(TicketReceived, [ticket_fields()]) is not None


@pytest.mark.parametrize(
    "change",
    [
        {"repeat_count": True},  # a bool where the model keeps an int
        {"urgency": "soon"},  # not one of the literal's values
        {"received_at": datetime(2026, 12, 5)},  # naive
        # An offset with seconds: pydantic and orjson write it differently.
        {"received_at": datetime(1900, 6, 1, tzinfo=ZoneInfo("Asia/Shanghai"))},
        {"location": {**ticket_fields()["location"], "longitude": 120}},  # int for a float
        {"citizen": {"display_name": None, "citizen_hash": None, "phone_masked": None}},  # order
        {"attachments": ({"filename": "a.jpg"},)},
        {"title": b"bytes"},
    ],
)
def test_fields_it_cannot_vouch_for_are_left_to_the_model(change: dict[str, Any]) -> None:
    assert encode_fields(TicketReceived, [ticket_fields(), {**ticket_fields(), **change}]) is None


def test_a_field_missing_or_out_of_order_is_left_to_the_model() -> None:
    fields = ticket_fields()
    del fields["category_source"]
    assert encode_fields(TicketReceived, [fields]) is None
    reordered = dict(reversed(ticket_fields().items()))
    assert encode_fields(TicketReceived, [reordered]) is None


def test_every_registered_class_is_either_written_or_declined() -> None:
    """The writer knows each class's shape or says it does not; it never guesses."""
    for cls in registry().values():
        encode_fields(cls, [])
    assert encode_fields(FeedbackReceived, []) == []


def test_written_ids_are_distinct_random_uuids_as_the_model_makes_them() -> None:
    written = encode_fields(TicketReceived, [ticket_fields() for _ in range(64)])
    assert written is not None
    ids = [w.event_id for w in written]
    assert len(set(ids)) == len(ids)
    for event_id, w in zip(ids, written, strict=True):
        assert (event_id.version, event_id.variant) == (4, uuid.RFC_4122)
        assert dict(w.record.headers)["ce_id"] == str(event_id).encode()


# Values a field may wrongly hold, by field (nested fields by their parent).
WRONG: dict[str, list[Any]] = {
    "ticket_id": [None, 7, b"id"],
    "channel": [None, 1.5],
    "received_at": [
        datetime(2026, 12, 5),  # naive
        datetime(1900, 6, 1, tzinfo=ZoneInfo("Asia/Shanghai")),  # an offset with seconds
        datetime(2026, 12, 5, tzinfo=timezone(timedelta(seconds=30))),
        "2026-12-05T00:00:00Z",
    ],
    "title": [None, 3],
    "urgency": ["soon", None],
    "is_enterprise": [1, None],
    "repeat_of": [5],
    "repeat_count": [True, 1.0, None],
    "external_id": [1],
    "attachments": [({"filename": "a.jpg"},), [], None],
    "category_source": ["other"],
    "citizen": [None, {}, {"display_name": None, "citizen_hash": None, "phone_masked": None}],
    "location": [{"address": None}, "here"],
    "location.longitude": [120, "120.5", True],
    "citizen.phone_masked": [0],
}


@st.composite
def spoiled(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events' fields, some of them with a value of a wrong type or shape in one field."""
    fields = draw(st.lists(TICKET_FIELDS, min_size=1, max_size=6))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(fields) - 1))
        name = draw(st.sampled_from(sorted(WRONG)))
        value = draw(st.sampled_from(WRONG[name]))
        parent, _, child = name.partition(".")
        if child and type(fields[at][parent]) is dict:
            fields[at] = {**fields[at], parent: {**fields[at][parent], child: value}}
        elif not child:
            fields[at] = {**fields[at], name: value}
    if draw(st.booleans()):  # a field missing
        at = draw(st.integers(0, len(fields) - 1))
        fields[at] = {
            k: v
            for k, v in fields[at].items()
            if k != draw(st.sampled_from(["title", "category_source"]))
        }
    return fields


@settings(max_examples=400, deadline=None)
@given(spoiled())
def test_the_column_checks_decide_as_each_events_check(fields: list[dict[str, Any]]) -> None:
    """A group is written only when each event's own check would take it, value by value."""
    check = _payload_check(TicketReceived)
    assert check is not None
    each = all(check(f) for f in fields)
    assert (encode_fields(TicketReceived, fields) is not None) == each


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | TEXT | TIMES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["ticket_id", "a", "b"]), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["ticket_id", "a"]), JSON), min_size=1))
def test_payloads_cut_from_one_dump_are_each_events_dump(values: list[dict[str, Any]]) -> None:
    """Cut at each next object's first key only where that is certain, else dumped one by one:
    nested objects with the same key, objects without it, any text."""
    values = [{"ticket_id": v.pop("ticket_id", None), **v} for v in values]
    assert _payloads(values, b',{"ticket_id":') == [
        orjson.dumps(v, option=orjson.OPT_UTC_Z) for v in values
    ]


def test_a_written_id_copies_and_pickles_as_its_uuid() -> None:
    (w,) = encode_fields(TicketReceived, [ticket_fields()]) or []
    plain = uuid.UUID(str(w.event_id))
    assert w.event_id == plain and hash(w.event_id) == hash(plain)
    assert repr(w.event_id) == repr(plain)
    for made in (
        copy.copy(w.event_id),
        copy.deepcopy(w.event_id),
        pickle.loads(pickle.dumps(w.event_id)),
    ):
        assert type(made) is uuid.UUID and made == plain


def test_a_group_shares_one_time_and_its_constant_headers() -> None:
    written = encode_fields(TicketReceived, [ticket_fields() for _ in range(3)]) or []
    assert len({w.occurred_at for w in written}) == 1
    assert len({id(w.record.headers[1]) for w in written}) == 1  # ce_source, one tuple
