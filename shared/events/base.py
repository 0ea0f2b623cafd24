"""Event base class, the type registry, and the CloudEvents 1.0 Kafka binding (binary mode).

Every event is a frozen pydantic v2 model declared once, in the module of the service that emits
it (``shared/events/<service>.py``). Its CloudEvents ``type`` carries the version, so a consumer
can keep reading v1 while v2 is rolled out. On Kafka the attributes travel as ``ce_*`` headers,
the payload as JSON in the record value, and the ticket id is the record key so one ticket's
events stay in order on one partition.
"""

from __future__ import annotations

import os
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from functools import cache
from operator import attrgetter, itemgetter
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import numpy as np
import orjson
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

TYPE_PREFIX = "cn.fengqiao"


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every domain event: immutable, with an id, an aware timestamp and a ticket key."""

    model_config = ConfigDict(frozen=True, extra="forbid", cache_strings=False)

    # Set on each concrete subclass.
    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1
    topic: ClassVar[str]
    source: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)

    def partition_key(self) -> str:
        """Records with the same key keep their order; by default the ticket id."""
        key = getattr(self, "ticket_id", None)
        return str(key) if key is not None else str(self.event_id)

    @classmethod
    def cloudevent_type(cls) -> str:
        return f"{TYPE_PREFIX}.{cls.event_type}.v{cls.event_version}"

    def data_json(self) -> bytes:
        """The payload without the attributes that travel as CloudEvents headers."""
        return orjson.dumps(self.model_dump(mode="json", exclude=_HEADER_FIELDS))


_HEADER_FIELDS = {"event_id", "occurred_at"}


class UnknownEventType(LookupError):
    """A record carries a CloudEvents type no registered event class claims."""


class EventDecodeError(ValueError):
    """A record is not a valid CloudEvent of a registered type; ``reason`` says why."""


_REGISTRY: dict[str, type[Event]] = {}
_E = TypeVar("_E", bound=type[Event])


def register(cls: _E) -> _E:
    """Class decorator: make an event type known to the decoder, refusing duplicates."""
    ce_type = cls.cloudevent_type()
    if ce_type in _REGISTRY and _REGISTRY[ce_type] is not cls:
        raise ValueError(f"event type {ce_type} registered twice")
    _REGISTRY[ce_type] = cls
    return cls


def registry() -> dict[str, type[Event]]:
    """Every registered event class by CloudEvents type (importing all event modules first)."""
    from shared.events import load_all

    load_all()
    return dict(_REGISTRY)


class _RawJSONFormat(JSONFormat):
    """JSON format that hands the payload bytes to pydantic untouched (it parses faster)."""

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return body


_FORMAT = _RawJSONFormat()


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record ready to send: topic-independent key, value and headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_parts(
    *, event_id: str, ce_type: str, source: str, occurred_at: datetime, key: str, data: bytes
) -> Record:
    """Build the binary-mode CloudEvents Kafka record from stored outbox columns."""
    event = CloudEvent(
        {
            "id": event_id,
            "source": source,
            "type": ce_type,
            "specversion": "1.0",
            "time": occurred_at,
            "subject": key,
            "datacontenttype": "application/json",
            "partitionkey": key,
        },
        data,
    )
    message = to_binary(event, _FORMAT)
    return Record(key=key.encode(), value=message.value, headers=list(message.headers.items()))


def encode(event: Event) -> Record:
    """Encode one event as a CloudEvents 1.0 Kafka record in binary mode.

    The same record ``encode_parts`` builds through the SDK (a test holds them equal for every
    registered event), written directly: an event's attributes are valid by construction (a
    uuid, an aware time, its class's type and source), and the SDK's object and validation cost
    a measurable share of a ticket's CPU on intake's hot path."""
    return _record(event, event.data_json())


@cache
def _list_of(cls: type[Event]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[cls])  # type: ignore[valid-type]


def encode_many(events: Sequence[Event]) -> list[Record]:
    """``encode`` of each event, the payloads of events of one class dumped by one serializer
    call for them all (its loop is pydantic-core's, not one ``model_dump`` call per event)."""
    if not events:
        return []
    cls = type(events[0])
    if cls.data_json is not Event.data_json or any(type(e) is not cls for e in events):
        return [encode(e) for e in events]
    payloads = _list_of(cls).dump_python(
        list(events), mode="json", exclude={"__all__": _HEADER_FIELDS}
    )
    return [_record(e, orjson.dumps(p)) for e, p in zip(events, payloads, strict=True)]


def dump_json_many(
    events: Sequence[Event], leave_out: Mapping[type[Event], Any] | None = None
) -> list[str]:
    """``model_dump_json()`` of each event, the events of one class dumped by one serializer
    call for them all and the text cut where each next event's object opens: ``,{"event_id":``
    (an event's first field) cannot occur inside a JSON string, so it occurs at every boundary
    and, if the count says nowhere else, only there; one dump per event otherwise. The fields
    ``leave_out`` names for a class are not written (``exclude``)."""
    texts: list[str | None] = [None] * len(events)
    groups: dict[type[Event], list[int]] = {}
    for at, event in enumerate(events):
        groups.setdefault(type(event), []).append(at)
    for cls, ats in groups.items():
        left = leave_out.get(cls) if leave_out else None
        if (
            len(ats) > 1
            and cls.model_dump_json is BaseModel.model_dump_json
            and next(iter(cls.model_fields)) == "event_id"
        ):
            joined = _list_of(cls).dump_json(
                [events[at] for at in ats], exclude={"__all__": left} if left else None
            )
            parts = joined[1:-1].split(_NEXT_EVENT)
            if len(parts) == len(ats):
                texts[ats[0]] = parts[0].decode()
                for at, part in zip(ats[1:], parts[1:], strict=True):
                    texts[at] = (_OPENING + part).decode()
                continue
        for at in ats:
            texts[at] = events[at].model_dump_json(exclude=left)
    return texts  # type: ignore[return-value]  # every place filled above


_NEXT_EVENT = b',{"event_id":'
_OPENING = _NEXT_EVENT[1:]


def _record(event: Event, data: bytes) -> Record:
    return _record_of(
        type(event), str(event.event_id), event.partition_key(), event.occurred_at, data
    )


def _record_of(
    cls: type[Event], event_id: str, key_text: str, occurred_at: datetime, data: bytes
) -> Record:
    key = key_text.encode()
    time = _time_text(occurred_at)
    headers = [
        ("ce_id", event_id.encode()),
        ("ce_source", cls.source.encode()),
        ("ce_type", cls.cloudevent_type().encode()),
        ("ce_specversion", b"1.0"),
        ("ce_time", time.encode()),
        ("ce_subject", key),
        ("content-type", b"application/json"),
        ("ce_partitionkey", key),
    ]
    return Record(key=key, value=data, headers=headers)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An event as the outbox stores it: its record, and what its audit row reads of it."""

    event_id: uuid.UUID
    event_type: str
    topic: str
    ticket_id: str | None
    occurred_at: datetime
    record: Record


def encoded(events: Sequence[Event]) -> list[Encoded]:
    """Each event with its record (``encode_many``)."""
    return [
        Encoded(e.event_id, e.event_type, e.topic, getattr(e, "ticket_id", None), e.occurred_at, r)
        for e, r in zip(events, encode_many(events), strict=True)
    ]


def encode_fields(cls: type[Event], fields: Sequence[Mapping[str, Any]]) -> list[Encoded] | None:
    """Events of ``cls`` given their fields (all but the id and time, in the model's order, nested
    models as dicts in theirs), written straight to their records: the bytes ``encode`` writes
    for ``cls.model_validate`` of the same fields with a new id and the time of this call,
    without building and dumping a model per event (a test holds the two equal).

    The work is done a column at a time, not an event at a time: each field's values are checked
    together (one type test per distinct type), the payloads are one ``orjson`` call for them
    all, the ids one random read turned into their texts at once, and the time and the headers
    every event shares are made once.

    None when this writer cannot vouch for every value — a field missing or out of order, a
    value of another type than the model keeps unchanged (an int for a float, a time whose
    offset has seconds), attachments, a class with validators or its own encoding — and the
    caller validates them the ordinary way, which says exactly what is wrong."""
    writer = _writer(cls)
    if writer is None or not writer.fits(fields):
        return None
    count = len(fields)
    if not count:
        return []
    data = _payloads(fields, writer.first)
    event_ids, raw_ids = _uuid4_texts(count)
    occurred_at = utcnow()
    time = ("ce_time", _time_text(occurred_at).encode())
    event_type, topic = cls.event_type, cls.topic
    source, ce_type = writer.source, writer.ce_type
    if writer.keyed:
        ticket_ids: list[Any] = [f["ticket_id"] for f in fields]
        keys = [t.encode() for t in ticket_ids]
    else:
        ticket_ids, keys = [None] * count, raw_ids
    return [
        Encoded(
            event_id,
            event_type,
            topic,
            ticket_id,
            occurred_at,
            Record(
                key,
                payload,
                [
                    ("ce_id", raw_id),
                    source,
                    ce_type,
                    _SPEC_VERSION,
                    time,
                    ("ce_subject", key),
                    _CONTENT_TYPE,
                    ("ce_partitionkey", key),
                ],
            ),
        )
        for event_id, raw_id, ticket_id, key, payload in zip(
            event_ids, raw_ids, ticket_ids, keys, data, strict=True
        )
    ]


_SPEC_VERSION = ("ce_specversion", b"1.0")
_CONTENT_TYPE = ("content-type", b"application/json")


def _time_text(occurred_at: datetime) -> str:
    """The ``ce_time`` header's text: ISO 8601, UTC as ``Z``."""
    time = occurred_at.isoformat()
    return time[:-6] + "Z" if time.endswith("+00:00") else time


class _KnownText(uuid.UUID):
    """A ``uuid.UUID`` that keeps the text ``str`` gives of it and returns it: the outbox and
    audit rows ask each event's id for its text, and ``encode_fields`` has it already. Made by
    ``_known_text``, its ``int`` and ``is_safe`` set as ``uuid.UUID.__init__`` sets them."""

    __slots__ = ("_text",)
    _text: str

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"UUID('{self._text}')"

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles as the plain uuid
        return (uuid.UUID, (self._text,))


_new_uuid = object.__new__
_set_int = uuid.UUID.__dict__["int"].__set__
_set_safe = uuid.UUID.__dict__["is_safe"].__set__
_set_text = _KnownText.__dict__["_text"].__set__


def _known_text(text: str, value: int) -> uuid.UUID:
    """The uuid of this value, whose text (``str`` of it) is ``text``."""
    made = _new_uuid(_KnownText)
    _set_int(made, value)
    _set_safe(made, uuid.SafeUUID.unknown)
    _set_text(made, text)
    return made


# The positions of a uuid's 32 hex digits in its 36-character text (the rest are dashes).
_HEX_AT = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _uuid4_texts(count: int) -> tuple[list[uuid.UUID], list[bytes]]:
    """``count`` random ids as ``uuid.uuid4()`` makes them, each with its text as ASCII bytes:
    the random bytes of all of them read in one call, their version and variant bits set and
    their hex digits written at once."""
    ids = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    ids[:, 6] = (ids[:, 6] & 0x0F) | 0x40  # version 4, as ``uuid.UUID(..., version=4)`` sets
    ids[:, 8] = (ids[:, 8] & 0x3F) | 0x80  # the RFC 4122 variant
    hexed = np.frombuffer(ids.tobytes().hex().encode("ascii"), dtype=np.uint8)
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    text[:, _HEX_AT] = hexed.reshape(count, 32)
    raw = text.tobytes()
    joined = raw.decode("ascii")
    random = ids.tobytes()
    at = range(count)
    return [
        _known_text(joined[36 * i : 36 * i + 36], int.from_bytes(random[16 * i : 16 * i + 16]))
        for i in at
    ], [raw[36 * i : 36 * i + 36] for i in at]


def _payloads(fields: Sequence[Mapping[str, Any]], first: bytes | None) -> list[bytes]:
    """Each event's fields as ``orjson.dumps`` writes them alone (times in UTC as ``Z``).

    One call for the whole list, cut where each next event's object opens: ``,{"<first
    field>":`` cannot occur inside a JSON string (its quote would be escaped), so it occurs
    at every boundary and, if the count says nowhere else, only there; one dump per event
    otherwise (a nested object with a key of that name)."""
    if first is not None and len(fields) > 1:
        joined = orjson.dumps(
            fields if type(fields) is list else list(fields), option=orjson.OPT_UTC_Z
        )
        parts = joined[1:-1].split(first)
        if len(parts) == len(fields):
            opening = first[1:]
            return [parts[0], *[opening + part for part in parts[1:]]]
    return [orjson.dumps(f, option=orjson.OPT_UTC_Z) for f in fields]


@dataclass(frozen=True, slots=True)
class _Writer:
    """What ``encode_fields`` knows of a class once: its fields' checks and shared headers."""

    fits: Callable[[Sequence[Any]], bool]
    first: bytes | None  # the separator before each next event's payload in one dump of all
    keyed: bool
    source: tuple[str, bytes]
    ce_type: tuple[str, bytes]


@cache
def _writer(cls: type[Event]) -> _Writer | None:
    if _payload_check(cls) is None:
        return None
    fits = _model_columns(cls, exclude=_HEADER_FIELDS)
    assert fits is not None  # the same annotations the row check knew
    names = [n for n in cls.model_fields if n not in _HEADER_FIELDS]
    return _Writer(
        fits=fits,
        first=b',{"' + names[0].encode() + b'":' if names else None,
        keyed="ticket_id" in cls.model_fields,
        source=("ce_source", cls.source.encode()),
        ce_type=("ce_type", cls.cloudevent_type().encode()),
    )


Check = Callable[[Any], bool]
Columns = Callable[[Sequence[Any]], bool]


@cache
def _payload_check(cls: type[Event]) -> Check | None:
    """Whether an event's fields are what ``encode_fields`` can write as the model would (one
    event's; ``_writer``'s column checks decide the same for many at once)."""
    fields = cls.model_fields
    if (
        cls.data_json is not Event.data_json
        or cls.partition_key is not Event.partition_key
        or fields["event_id"].default_factory is not uuid.uuid4
        or fields["occurred_at"].default_factory is not utcnow
    ):
        return None
    return _model_check(cls, exclude=_HEADER_FIELDS)


def _model_columns(
    cls: type[BaseModel], *, exclude: frozenset[str] | set[str] = frozenset()
) -> Columns | None:
    """``_model_check`` of every value of a column at once: plain dicts with exactly the model's
    keys in its order, then each field's values checked as one column."""
    if _model_check(cls, exclude=exclude) is None:
        return None
    names = [name for name in cls.model_fields if name not in exclude]
    found = [_column_check(cls.model_fields[name].annotation) for name in names]
    checks = [check for check in found if check is not None]
    if len(checks) != len(names):
        return None
    order = tuple(names)
    get: Callable[[Any], Any] = itemgetter(*order) if len(order) > 1 else tuple

    def fits(values: Sequence[Any]) -> bool:
        if not values:
            return True
        if set(map(type, values)) != {dict} or set(map(tuple, values)) != {order}:
            return False
        if not order:
            return True
        if len(order) == 1:
            columns: Sequence[Sequence[Any]] = [[v[order[0]] for v in values]]
        else:
            columns = list(zip(*map(get, values), strict=True))
        return all(check(column) for check, column in zip(checks, columns, strict=True))

    return fits


def _column_check(annotation: Any) -> Columns | None:
    """``_value_check`` of every value of a column at once: the test of each distinct type once
    rather than of each value (the values of one field of a group mostly share one)."""
    one = _value_check(annotation)
    if one is None:
        return None
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = get_args(annotation)
        inner = _column_check(next(a for a in args if a is not type(None)))
        assert inner is not None

        def optional(values: Sequence[Any]) -> bool:
            present = [v for v in values if v is not None]
            return inner(present) if present else True

        return optional
    if origin is Literal:
        allowed = frozenset(get_args(annotation))
        return lambda values: set(map(type, values)) <= {str} and set(values) <= allowed
    if origin is tuple:
        return lambda values: set(map(type, values)) <= {tuple} and not any(values)
    if annotation is str:
        return lambda values: all(issubclass(t, str) for t in set(map(type, values)))
    if annotation in (bool, int, float):
        exact = {annotation}
        return lambda values: set(map(type, values)) <= exact
    if annotation is AwareDatetime:
        return _whole_minute_offsets
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_columns(annotation)
    return lambda values: all(map(one, values))


def _whole_minute_offsets(values: Sequence[Any]) -> bool:
    """``_whole_minute_offset`` of each value: a fixed offset (``timezone``) tested once, any
    other zone (its offset varies with the date) at each value."""
    if set(map(type, values)) - {datetime}:
        return False
    zones = set(map(attrgetter("tzinfo"), values))
    if all(type(zone) is timezone for zone in zones):
        return all(_whole_minute_offset(datetime(2000, 1, 1, tzinfo=zone)) for zone in zones)
    return all(map(_whole_minute_offset, values))


def _model_check(
    cls: type[BaseModel], *, exclude: frozenset[str] | set[str] = frozenset()
) -> Check | None:
    decorators = cls.__pydantic_decorators__
    if any(
        (
            decorators.validators,
            decorators.field_validators,
            decorators.root_validators,
            decorators.field_serializers,
            decorators.model_serializers,
            decorators.model_validators,
            decorators.computed_fields,
        )
    ):
        return None
    names: list[str] = []
    checks: list[Check] = []
    for name, field in cls.model_fields.items():
        if name in exclude:
            continue
        check = (
            _value_check(field.annotation) if not field.metadata and field.alias is None else None
        )
        if check is None:
            return None
        names.append(name)
        checks.append(check)
    pairs = tuple(zip(names, checks, strict=True))
    size = len(pairs)

    def fits(value: Any) -> bool:
        """Every field present, in order, each value one its check takes (one loop)."""
        if type(value) is not dict or len(value) != size:
            return False
        for (name, check), (key, item) in zip(pairs, value.items(), strict=True):
            if key != name or not check(item):
                return False
        return True

    return fits


def _value_check(annotation: Any) -> Check | None:
    """A test that a value of this annotation is kept unchanged by validation and dumped by
    orjson as pydantic's JSON mode would; None for annotations it does not know."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = get_args(annotation)
        inner = [a for a in args if a is not type(None)]
        check = _value_check(inner[0]) if len(inner) == 1 and len(args) == 2 else None
        if check is None:
            return None
        return lambda v: v is None or check(v)
    if origin is Literal:
        allowed = frozenset(get_args(annotation))
        if not all(type(a) is str for a in allowed):
            return None
        return lambda v: type(v) is str and v in allowed
    if origin is tuple:
        return lambda v: type(v) is tuple and not v  # items would need their own models
    if origin is dict:
        key, item = get_args(annotation)
        check_item = _value_check(item) if key is str else None
        if check_item is None:
            return None
        return lambda v: (
            type(v) is dict and all(type(k) is str and check_item(x) for k, x in v.items())
        )
    if annotation is str:
        return lambda v: isinstance(v, str)
    if annotation is bool:
        return lambda v: type(v) is bool
    if annotation is int:
        return lambda v: type(v) is int
    if annotation is float:
        return lambda v: type(v) is float
    if annotation is AwareDatetime:
        return _whole_minute_offset
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_check(annotation)
    return None


def _whole_minute_offset(value: Any) -> bool:
    """An aware time whose offset pydantic and orjson write alike (they differ on seconds)."""
    if type(value) is not datetime:
        return False
    offset = value.utcoffset()
    return offset is not None and offset.seconds % 60 == 0 and not offset.microseconds


HEADER_NAMES = (
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_specversion",
    "ce_time",
    "ce_subject",
    "content-type",
    "ce_partitionkey",
)
"""The headers ``encode`` writes, in its order (the outbox stores their values alone)."""

# A record with exactly these (the attributes non-empty) is one of ours and may take the
# direct path; anything else goes through the SDK's validation.
_OUR_HEADERS = frozenset(HEADER_NAMES)


def _decode_ours(
    value: bytes | None, headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]
) -> Event | None:
    """A record as ``encode`` writes it, decoded straight from its headers and validated once
    from the payload's bytes; None for anything else, or anything that does not validate (the
    full path then says exactly what is wrong)."""
    attributes = dict(headers)
    if (
        attributes.keys() != _OUR_HEADERS
        or attributes["ce_specversion"] != b"1.0"
        or not attributes["ce_id"]
        or not attributes["ce_source"]
    ):
        return None
    cls = _REGISTRY.get(attributes["ce_type"].decode("utf-8", "replace"))
    payload = (value or b"").rstrip()
    if cls is None or not payload.endswith(b"}"):
        return None
    try:
        time = datetime.fromisoformat(attributes["ce_time"].decode())
        if time.tzinfo is None:
            return None
        # The attributes last: in a JSON object the last of a repeated key wins, as they do
        # over the payload in the full path.
        extra = orjson.dumps({"event_id": attributes["ce_id"].decode(), "occurred_at": time})
        body = payload[:-1].rstrip()
        joined = body + (b"," if body != b"{" else b"") + extra[1:]
        return cls.model_validate_json(joined)
    except (ValueError, UnicodeDecodeError):  # ValidationError is a ValueError
        return None


def decode(
    value: bytes | None,
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    key: bytes | None = None,
) -> Event:
    """Decode a binary-mode record into its registered event class.

    Raises UnknownEventType for a type nobody registered and EventDecodeError, naming the
    failing field, for a payload that does not validate.
    """
    event = _decode_ours(value, headers)
    if event is not None:
        return event
    try:
        message = KafkaMessage(headers=dict(headers), key=key, value=value or b"")
        ce = from_binary(message, _FORMAT)
    except Exception as exc:  # the SDK raises several types for bad attributes
        raise EventDecodeError(f"not a CloudEvent: {exc}") from exc
    ce_type = ce.get_type()
    cls = _REGISTRY.get(ce_type) or registry().get(ce_type)
    if cls is None:
        raise UnknownEventType(f"no event class registered for type {ce_type!r}")
    try:
        raw = ce.get_data()
        if not isinstance(raw, (bytes, str)):
            raise EventDecodeError("payload is not JSON bytes")
        data = orjson.loads(raw or b"null")
        if not isinstance(data, dict):
            raise EventDecodeError("payload is not a JSON object")
        data["event_id"] = ce.get_id()
        data["occurred_at"] = ce.get_time()
        return cls.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise EventDecodeError(f"invalid {ce_type} payload: {fields}") from exc
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"payload is not JSON: {exc}") from exc


def header(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], name: str
) -> str | None:
    """One header's value as text, or None."""
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None
