"""Repeat-appeal detection: same citizen, or same place and near-identical text, in the window."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake import repeats
from services.intake.nfkc import nfkc
from services.intake.repeats import (
    Appeal,
    RepeatPolicy,
    appeal,
    candidate_query,
    distance_m,
    find_repeats,
    hamming,
    jaccard,
    normalize_address,
    normalize_text,
    shingles,
    shingles_many,
    simhash64,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
FLOOD = "翠苑三区地下车库积水严重，最深处没过脚踝，排水泵坏了，物业一直不修"
FLOOD_AGAIN = "来电人反映：翠苑三区地下车库积水严重，最深处没过脚踝，排水泵坏了，物业一直不修！"
NOISE = "楼下烧烤店每天营业到凌晨两点，油烟和噪音扰民，请查处"


def make(**fields: Any) -> Appeal:
    """An appeal with defaults: received at T0, about the flooded garage, no place or citizen."""
    base: dict[str, Any] = {"received_at": T0, "title": "车库积水", "content": FLOOD}
    return appeal(**{**base, **fields})


def test_same_citizen_within_the_window_is_a_repeat_whatever_the_text() -> None:
    earlier = make(ticket_id="T1", citizen_hash="h1", content=NOISE)
    new = make(citizen_hash="h1", received_at=T0 + timedelta(days=29))
    decision = find_repeats(new, [earlier])
    assert (decision.repeat_of, decision.repeat_count) == ("T1", 1)
    assert decision.matches[0].reason == "same_citizen"


def test_outside_the_window_or_in_the_future_is_not_a_repeat() -> None:
    new = make(citizen_hash="h1", received_at=T0 + timedelta(days=31))
    assert not find_repeats(new, [make(ticket_id="T1", citizen_hash="h1")]).is_repeat
    later = make(ticket_id="T2", citizen_hash="h1", received_at=T0 + timedelta(days=40))
    assert not find_repeats(new, [later]).is_repeat
    wide = RepeatPolicy(window=timedelta(days=60))
    assert find_repeats(new, [make(ticket_id="T1", citizen_hash="h1")], wide).is_repeat


def test_the_citizen_rule_can_require_similar_text() -> None:
    policy = RepeatPolicy(citizen_min_similarity=0.3)
    new = make(citizen_hash="h1", received_at=T0 + timedelta(days=1))
    assert not find_repeats(
        new, [make(ticket_id="T1", citizen_hash="h1", content=NOISE)], policy
    ).is_repeat
    assert find_repeats(new, [make(ticket_id="T1", citizen_hash="h1")], policy).is_repeat


@pytest.mark.parametrize(
    ("earlier_place", "new_place"),
    [
        ({"grid_code": "G-12"}, {"grid_code": "G-12"}),
        ({"address": "浙江省临江市西湖区翠苑三区"}, {"address": "西湖区 翠苑三区"}),
        ({"address": "临江区翠苑三区12幢地下车库"}, {"address": "翠苑三区12幢"}),
        (
            {"longitude": 120.1302, "latitude": 30.2846},
            {"longitude": 120.1308, "latitude": 30.2849},
        ),
    ],
)
def test_same_place_and_near_identical_text_is_a_repeat(
    earlier_place: dict[str, Any], new_place: dict[str, Any]
) -> None:
    earlier = make(ticket_id="T1", citizen_hash="a", **earlier_place)
    new = make(
        citizen_hash="b", content=FLOOD_AGAIN, received_at=T0 + timedelta(days=3), **new_place
    )
    decision = find_repeats(new, [earlier])
    assert decision.repeat_of == "T1"
    assert decision.matches[0].reason == "same_place_similar_text"
    assert decision.matches[0].similarity >= 0.6


@pytest.mark.parametrize(
    ("earlier_fields", "new_fields"),
    [
        (
            {"grid_code": "G-12", "content": NOISE},
            {"grid_code": "G-12"},
        ),  # same place, other matter
        ({"grid_code": "G-11"}, {"grid_code": "G-12"}),  # same words, other grid
        (
            {"longitude": 120.13, "latitude": 30.28},
            {"longitude": 120.14, "latitude": 30.28},
        ),  # ~960 m
        ({"address": "翠苑"}, {"address": "翠苑三区12幢"}),  # too short to count as the same place
        ({}, {}),  # same text, but no place known at all
    ],
)
def test_not_repeats(earlier_fields: dict[str, Any], new_fields: dict[str, Any]) -> None:
    earlier = make(ticket_id="T1", **earlier_fields)
    new = make(received_at=T0 + timedelta(days=1), **new_fields)
    assert find_repeats(new, [earlier]) == find_repeats(new, [])


def test_chains_link_to_their_first_ticket_and_count_every_match() -> None:
    first = make(ticket_id="T1", citizen_hash="h", received_at=T0)
    second = make(
        ticket_id="T2", citizen_hash="h", received_at=T0 + timedelta(days=5), repeat_of="T1"
    )
    third = make(
        ticket_id="T3", citizen_hash="h", received_at=T0 + timedelta(days=9), repeat_of="T1"
    )
    new = make(citizen_hash="h", received_at=T0 + timedelta(days=33))
    decision = find_repeats(new, [third, second, first])  # T1 is outside the window now
    assert decision.repeat_of == "T1"  # …but T2 names it as the chain's first
    assert decision.repeat_count == 2
    assert [m.ticket_id for m in decision.matches] == ["T2", "T3"]


def test_an_appeal_never_repeats_itself_or_an_unsaved_candidate() -> None:
    new = make(ticket_id="T9", citizen_hash="h")
    assert not find_repeats(new, [new, make(citizen_hash="h")]).is_repeat


def test_candidate_query_covers_the_window_and_a_box_round_the_point() -> None:
    new = make(
        citizen_hash="h", grid_code="G", address="翠苑三区", longitude=120.13, latitude=30.28
    )
    query = candidate_query(new, RepeatPolicy(window=timedelta(days=7), place_radius_m=100))
    assert (query.since, query.until) == (T0 - timedelta(days=7), T0)
    assert (query.citizen_hash, query.grid_code, query.address_key) == ("h", "G", "翠苑三区")
    assert query.bbox is not None
    west, south, east, north = query.bbox
    assert distance_m(west, 30.28, east, 30.28) == pytest.approx(200, rel=0.01)
    assert distance_m(120.13, south, 120.13, north) == pytest.approx(200, rel=0.01)


def test_normalization() -> None:
    assert normalize_text("来电人反映：路灯 不亮！！") == "路灯不亮"
    assert normalize_text("ＡＢＣ，１２３") == "abc123"
    assert normalize_address("浙江省临江市西湖区翠苑三区 12幢") == "西湖区翠苑三区12幢"
    assert normalize_address("  ") is None


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        appeal(received_at=datetime(2026, 1, 1), title="t", content="c")


texts = st.text(alphabet="路灯不亮积水井盖油烟噪音小区物业停车垃圾", min_size=0, max_size=40)


@given(texts, texts)
def test_jaccard_is_a_symmetric_similarity(a: str, b: str) -> None:
    sa, sb = shingles(a), shingles(b)
    assert jaccard(sa, sb) == jaccard(sb, sa)
    assert 0.0 <= jaccard(sa, sb) <= 1.0
    if sa:
        assert jaccard(sa, sa) == 1.0


@given(
    st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30), max_size=6),
    st.integers(1, 9),
)
def test_shingles_of_many_texts_at_once_are_each_texts_own(texts: list[str], size: int) -> None:
    assert [a.tolist() for a in shingles_many(texts, size)] == [
        sorted(shingles(t, size)) for t in texts
    ]


# The Basic Multilingual Plane only (one lookup per character), 1-, 2- and 3-byte characters
# mixed, at the edges of each width.
_BMP = st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]) | st.sampled_from(
    ["a", "\x7f", "\x80", "é", "\u07ff", "\u0800", "路", "\uffff"]
)


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=_BMP, max_size=40), max_size=8), st.integers(1, 9))
def test_shingles_of_many_texts_of_the_bmp_are_each_texts_own(texts: list[str], size: int) -> None:
    assert [a.tolist() for a in shingles_many(texts, size)] == [
        sorted(shingles(t, size)) for t in texts
    ]


_PUNCTUATED = st.lists(
    st.characters(exclude_categories=["Cs"])
    | st.sampled_from(
        ["_", " ", "，", "：", "！", "Ａ", "１", "\u3000", "来电人反映", "诉求：", "浙江省杭州市"]
    )
).map("".join)


@settings(max_examples=400)
@given(_PUNCTUATED)
def test_compared_text_and_address_key_drop_exactly_the_non_word_characters(text: str) -> None:
    """The joined runs of word characters equal removing ``[\\W_]+`` (the definition)."""
    folded = nfkc(text).lower()
    assert normalize_text(text) == re.sub(r"[\W_]+", "", repeats._BOILERPLATE.sub("", folded))
    compact = re.sub(r"[\W_]+", "", folded)
    key = repeats._ADMIN_PREFIX.sub("", compact, count=1)
    assert normalize_address(text) == ((key or compact or None) if text else None)


def test_a_group_of_one_long_text_among_short_ones_gives_each_texts_own() -> None:
    """Padding every text to the longest would outweigh the grams: sorted as one array."""
    texts = [FLOOD * 40, *(f"{FLOOD[i : i + 5]}" for i in range(40)), "", "ab", FLOOD]
    assert [a.tolist() for a in shingles_many(texts)] == [sorted(shingles(t)) for t in texts]


# Gram values anywhere in 32 bits, the largest among them (the grid's padding value), repeats.
_GRAM_VALUES = st.integers(0, 0xFFFFFFFF) | st.sampled_from([0, 1, 0xFFFFFFFE, 0xFFFFFFFF])


@settings(max_examples=300)
@given(st.lists(st.lists(_GRAM_VALUES, min_size=1, max_size=30), min_size=1, max_size=12))
def test_each_texts_gram_values_sorted_and_unique_by_either_way(values: list[list[int]]) -> None:
    crc = np.array([v for row in values for v in row], dtype=np.uint32)
    owner = np.repeat(np.arange(len(values)), [len(row) for row in values])
    column = np.concatenate([np.arange(len(row)) for row in values])
    grams = np.array([len(row) for row in values], dtype=np.int64)
    expected = [sorted(set(row)) for row in values]
    for slack, extra in ((2, 4096), (0, 0)):  # as rows of a grid; as one array of keys
        with mock.patch.multiple(repeats, _GRID_SLACK=slack, _GRID_EXTRA=extra):
            found, bounds = repeats._sorted_unique(crc, owner, column, grams)
        assert found.dtype == np.uint32
        got = [found[bounds[n] : bounds[n + 1]].tolist() for n in range(len(values))]
        assert got == expected


@given(texts.filter(lambda t: len(t) >= 20))
def test_simhash_depends_on_the_set_of_shingles_only(text: str) -> None:
    grams = sorted(shingles(text))
    assert simhash64(grams) == simhash64(reversed(grams))
    assert 0 <= simhash64(grams) < 1 << 64


def test_simhash_separates_different_texts() -> None:
    near = hamming(
        simhash64(shingles(normalize_text(FLOOD))), simhash64(shingles(normalize_text(FLOOD_AGAIN)))
    )
    far = hamming(
        simhash64(shingles(normalize_text(FLOOD))), simhash64(shingles(normalize_text(NOISE)))
    )
    assert near < far
