"""JSON columns' serializer: orjson's UTF-8 text where it reads back as the stdlib's, the
stdlib's own outcome (text or error) everywhere else."""

from __future__ import annotations

import enum
import json
import math
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.db import dumps_json

_text = st.text(
    st.one_of(
        st.characters(codec="utf-8"),  # any code point but lone surrogates, astral included
        st.sampled_from('路灯不亮噪音扰民😀𠀋\u2028"\\\n'),
    )
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included
    _text,
)
_keys = st.one_of(_text, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(_text, inner, max_size=5),
        st.dictionaries(_keys, inner, max_size=5),
    ),
    max_leaves=30,
)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_has_non_finite, value)) or any(map(_has_non_finite, value.values()))
    if isinstance(value, list | tuple):
        return any(map(_has_non_finite, value))
    return False


@settings(max_examples=400)
@given(_values)
def test_every_value_reads_back_as_the_stdlibs_text_reads(value: Any) -> None:
    ours, theirs = dumps_json(value), json.dumps(value)
    if _has_non_finite(value):
        assert ours == theirs  # NaN and infinities written by the stdlib, as before
    else:
        assert json.loads(ours) == json.loads(theirs)


def test_cjk_and_astral_text_is_written_as_utf8_not_escaped() -> None:
    value = {"text": "路灯不亮已经三天 😀", "tags": ["噪音"]}
    written = dumps_json(value)
    assert written == '{"text":"路灯不亮已经三天 😀","tags":["噪音"]}'
    assert len(written.encode()) < len(json.dumps(value).encode()) / 1.5
    assert json.loads(written) == value


class _Plain(enum.Enum):
    A = 1


class _Named(enum.StrEnum):
    A = "a"


@pytest.mark.parametrize(
    "value",
    [
        {"at": datetime(2026, 12, 6, tzinfo=UTC)},
        [date(2026, 12, 6)],
        {"id": uuid.UUID(int=1)},  # orjson alone would write these three
        [_Plain.A],
        {"x": {1, 2}},
        {"x": b"bytes"},
    ],
)
def test_what_the_stdlib_refuses_is_refused_the_same_way(value: Any) -> None:
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        dumps_json(value)


@pytest.mark.parametrize(
    "value",
    [
        {1: "one", None: 0, False: 1, 2.5: "x"},  # keys the stdlib turns into strings
        {"n": 2**64},  # beyond orjson's 64 bits
        {"s": "\ud800"},  # a lone surrogate: orjson refuses it, the stdlib escapes it
        {"v": float("nan"), "w": [float("inf"), -float("inf")]},
        [_Named.A, {"k": _Named.A}],  # subclasses by their value
    ],
)
def test_what_orjson_would_write_differently_is_the_stdlibs_text(value: Any) -> None:
    assert dumps_json(value) == json.dumps(value)


def test_nesting_beyond_orjsons_limit_is_written_by_the_stdlib() -> None:
    value: Any = 1
    for _ in range(300):
        value = [value]
    assert json.loads(dumps_json(value)) == json.loads(json.dumps(value))


def test_a_cycle_fails_as_the_stdlib_fails() -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(ValueError, match="Circular"):
        dumps_json(value)
