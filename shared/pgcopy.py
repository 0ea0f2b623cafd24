"""PostgreSQL's binary ``COPY`` stream of a table's rows, written a column at a time.

asyncpg's ``copy_records_to_table`` takes the rows as tuples and encodes every value through its
codec, one Cython call each; for a time that is ``astimezone``, a ``timedelta`` and its fields
read as Python objects, though most of a batch's times are one object repeated down a column
(the group's ``now``, an event's time). Here each column is encoded at once: a column of one
value repeated (a time, a channel's name, a status, NULLs) encoded once and its field repeated;
any other column's values mapped through one C call a pass (``str.encode``, a length from a
table of them, a ``struct`` packing); the stream is the columns zipped into rows and joined once,
each field's length and data as two pieces (no copy a value to put them together).

It writes what asyncpg's binary codecs write for the values it takes (a test holds the stored
rows equal, value by value): a ``str`` for the text types and JSON, ``bytes`` for ``bytea``,
an exact ``int`` for the integer types, an exact ``bool``, a ``float`` for the float types, an
aware ``datetime`` for ``timestamptz``, None anywhere. ``encode`` returns None for anything else
(another column type, a value of another type, one out of its type's range, a naive time), and
the caller hands the rows to asyncpg as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from operator import floordiv, sub
from typing import Any

# Header: signature, flags (no OIDs), no header extension; trailer: a field count of -1.
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"  # a field's length of -1
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LENGTH = struct.Struct(">i").pack
_INT2, _INT4, _INT8 = (
    struct.Struct(">ih").pack,
    struct.Struct(">ii").pack,
    struct.Struct(">iq").pack,
)
_FLOAT4, _FLOAT8 = struct.Struct(">if").pack, struct.Struct(">id").pack
_BOOLS = {True: b"\x00\x00\x00\x01\x01", False: b"\x00\x00\x00\x01\x00"}

# An encoder gives a column's fields as one list of whole fields, or as two: each field's
# length and each field's data (joined one after the other, without a copy a value to join them).
Encoder = Callable[[Sequence[Any]], list[list[bytes]]]
_HEADS = [_LENGTH(n) for n in range(4096)]  # the length of a short field, made once


def _heads(data: list[bytes]) -> list[bytes]:
    lengths = list(map(len, data))
    if lengths and max(lengths) >= len(_HEADS):
        return list(map(_LENGTH, lengths))
    return list(map(_HEADS.__getitem__, lengths))


def _texts(values: Sequence[Any]) -> list[list[bytes]]:
    """Text, varchar, json: the UTF-8 bytes, each led by its length (asyncpg's text codec; it
    takes a str subclass as a str, as ``str.encode`` does)."""
    try:
        data = list(map(str.encode, values))
    except TypeError as exc:  # not a str
        raise _Declined from exc
    return [_heads(data), data]


def _jsonb(values: Sequence[Any]) -> list[list[bytes]]:
    """jsonb: its format's version (1), then the text."""
    try:
        data = list(map(b"\x01".__add__, map(str.encode, values)))
    except TypeError as exc:
        raise _Declined from exc
    return [_heads(data), data]


def _bytea(values: Sequence[Any]) -> list[list[bytes]]:
    if set(map(type, values)) != {bytes}:
        raise _Declined
    return [_heads(list(values)), list(values)]


def _fixed(pack: Callable[..., bytes], size: int, kinds: set[type]) -> Encoder:
    def encode(values: Sequence[Any]) -> list[list[bytes]]:
        if not set(map(type, values)) <= kinds:
            raise _Declined
        try:
            return [list(map(pack, repeat(size), values))]
        except (struct.error, OverflowError) as exc:  # out of range: asyncpg raises its own
            raise _Declined from exc

    return encode


def _bools(values: Sequence[Any]) -> list[list[bytes]]:
    if set(map(type, values)) != {bool}:
        raise _Declined
    return [list(map(_BOOLS.__getitem__, values))]


def _times(values: Sequence[Any]) -> list[list[bytes]]:
    """timestamptz: microseconds since 2000-01-01 UTC (what asyncpg computes through
    ``astimezone`` and a ``timedelta``'s fields in Python objects), by ``map``s of C calls; a
    naive time (which asyncpg takes as local time) cannot be subtracted from an aware one."""
    if set(map(type, values)) != {datetime}:
        raise _Declined
    try:
        micros = list(map(floordiv, map(sub, values, repeat(_PG_EPOCH)), repeat(_MICROSECOND)))
    except TypeError as exc:
        raise _Declined from exc
    return [list(map(_INT8, repeat(8), micros))]


class _Declined(Exception):
    """A column this module does not write as asyncpg would."""


# By the column type's name in ``pg_type`` (a domain, an enum or an array is not here).
ENCODERS: dict[str, Encoder] = {
    "text": _texts,
    "varchar": _texts,
    "bpchar": _texts,
    "json": _texts,
    "jsonb": _jsonb,
    "bytea": _bytea,
    "int2": _fixed(_INT2, 2, {int}),
    "int4": _fixed(_INT4, 4, {int}),
    "int8": _fixed(_INT8, 8, {int}),
    "float4": _fixed(_FLOAT4, 4, {float}),
    "float8": _fixed(_FLOAT8, 8, {float}),
    "bool": _bools,
    "timestamptz": _times,
}
# Types whose equal values are encoded alike (``list.count`` compares by equality): a column of
# one such value repeated is encoded once.
_ONE_ENCODING = frozenset({str, datetime, type(None)})


def _column(values: Sequence[Any], encoder: Encoder) -> list[list[bytes]]:
    """One column's fields, NULL where a value is None; a column of one value (by identity or
    equality, most by identity: the group's time, a channel's name) encoded once."""
    n = len(values)
    first = values[0]
    if type(first) in _ONE_ENCODING and values[-1] == first and values.count(first) == n:
        if first is None:
            return [[_NULL] * n]
        return [[field] * n for (field,) in encoder([first])]
    if None not in values:
        return encoder(values)
    present = [at for at, value in enumerate(values) if value is not None]
    parts = encoder([values[at] for at in present])
    fields = [[_NULL] * n] + [[b""] * n for _ in parts[1:]]
    for part, column in zip(parts, fields, strict=True):
        for at, field in zip(present, part, strict=True):
            column[at] = field
    return fields


def encode(columns: Sequence[Sequence[Any]], types: Sequence[str]) -> bytes | None:
    """The binary ``COPY`` stream of the rows whose columns are ``columns`` (each a list of one
    column's values, all of one length), of the PostgreSQL types ``types`` (``pg_type``'s
    names); None where a column's type or a value is one this module does not write."""
    if not columns:
        return None
    encoders = []
    for name in types:
        encoder = ENCODERS.get(name)
        if encoder is None:
            return None
        encoders.append(encoder)
    if not columns[0]:
        return HEADER + TRAILER
    try:
        fields = [
            f for values, e in zip(columns, encoders, strict=True) for f in _column(values, e)
        ]
    except _Declined:
        return None
    count = struct.pack(">h", len(columns))
    rows = chain.from_iterable(zip(repeat(count, len(columns[0])), *fields, strict=True))
    return b"".join(chain((HEADER,), rows, (TRAILER,)))
