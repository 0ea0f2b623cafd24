"""The store-side decision (``repeat_lookup.decide``) is ``find_repeats`` with a chain count."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake import repeat_lookup
from services.intake.repeat_lookup import (
    NOT_A_REPEAT,
    Earlier,
    EarlierInUnit,
    Verdict,
    decide,
    keys_of,
)
from services.intake.repeats import Appeal, RepeatPolicy, appeal, find_repeats

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TEXTS = (
    "翠苑三区地下车库积水严重，最深处没过脚踝，排水泵坏了",
    "翠苑三区地下车库积水严重，最深处没过脚踝，排水泵坏了，物业一直不修",
    "楼下烧烤店每天营业到凌晨两点，油烟和噪音扰民",
    "路灯坏了",
    "",
)


def reference(new: object, earlier: list[Earlier], policy: RepeatPolicy) -> Verdict:
    """The definition: ``find_repeats``, counting the longest chain among the matches."""
    decision = find_repeats(new, [e.appeal for e in earlier], policy)  # type: ignore[arg-type]
    if not decision.is_repeat:
        return NOT_A_REPEAT
    counts = {e.appeal.ticket_id: e.repeat_count for e in earlier}
    chain = max(counts.get(m.ticket_id, 0) + 1 for m in decision.matches)
    return Verdict(
        repeat_of=decision.repeat_of,
        repeat_count=max(decision.repeat_count, chain),
        reason=decision.matches[0].reason,
    )


candidate = st.fixed_dictionaries(
    {
        "days": st.integers(-3, 40),
        "text": st.sampled_from(TEXTS),
        "citizen": st.sampled_from([None, "h1", "h2"]),
        "grid": st.sampled_from([None, "g1", "g2"]),
        "address": st.sampled_from([None, "北海街道塔山社区8号", "塔山社区8号"]),
        "repeat_of": st.sampled_from([None, "T0"]),
        "count": st.integers(0, 5),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    new=candidate,
    olds=st.lists(candidate, max_size=8),
    citizen_min=st.sampled_from([0.0, 0.3]),
)
def test_decide_is_find_repeats_with_the_chain_count(
    new: dict[str, object], olds: list[dict[str, object]], citizen_min: float
) -> None:
    policy = RepeatPolicy(citizen_min_similarity=citizen_min)

    def make(fields: dict[str, object], ticket_id: str | None, at: datetime) -> object:
        return appeal(
            received_at=at,
            title="",
            content=str(fields["text"]),
            ticket_id=ticket_id,
            citizen_hash=fields["citizen"],  # type: ignore[arg-type]
            grid_code=fields["grid"],  # type: ignore[arg-type]
            address=fields["address"],  # type: ignore[arg-type]
            repeat_of=fields["repeat_of"] if ticket_id else None,  # type: ignore[arg-type]
        )

    now = T0 + timedelta(days=35)
    fresh = make(new, "N", now)
    earlier = [
        Earlier(make(o, f"T{i + 1}", now - timedelta(days=o["days"])), o["count"])  # type: ignore[arg-type, operator]
        for i, o in enumerate(olds)
    ]
    assert decide(fresh, earlier, policy) == reference(fresh, earlier, policy)  # type: ignore[arg-type]


# Shingle sets near one of a few texts' (so a unit holds matches, near misses and strangers),
# or none (a text too short).
_BASES = (
    frozenset(range(0, 20)),
    frozenset(range(5, 25)),
    frozenset(range(18, 40)),
    frozenset(range(0, 40, 3)),
    frozenset(),
)
_unit_appeal = st.fixed_dictionaries(
    {
        "base": st.sampled_from(_BASES),
        "extra": st.frozensets(st.integers(0, 45), max_size=4),
        "drop": st.frozensets(st.integers(0, 45), max_size=8),
        "minutes": st.integers(0, 5),
        "citizen": st.sampled_from([None, "h1", "h2", "h3"]),
        "grid": st.sampled_from([None, "g1", "g1", "g2"]),
        "address": st.sampled_from([None, "a1", "a1", "a2"]),
    }
)


def _judged(appeals: list[Appeal], policy: RepeatPolicy, *, indexed: bool) -> list[Verdict]:
    """Each appeal of a unit decided in order against the earlier ones sharing a key: all of
    them (the definition), or those ``EarlierInUnit`` finds."""
    in_unit = EarlierInUnit(policy, [sorted(a.shingles) for a in appeals])
    local: dict[tuple[str, str], list[Earlier]] = {}
    verdicts = []
    for a in appeals:
        assert a.ticket_id is not None
        keys = keys_of(a)
        if indexed:
            candidates = list(in_unit.candidates(keys, a.ticket_id, sorted(a.shingles)).values())
        else:
            seen: dict[str | None, Earlier] = {}
            for key in keys:
                for e in local.get(key, ()):
                    seen.setdefault(e.appeal.ticket_id, e)
            candidates = list(seen.values())
        verdict = decide(a, candidates, policy)
        verdicts.append(verdict)
        earlier = Earlier(dataclasses.replace(a, repeat_of=verdict.repeat_of), verdict.repeat_count)
        in_unit.add(keys, earlier, sorted(a.shingles))
        for key in keys:
            local.setdefault(key, []).append(earlier)
    return verdicts


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(_unit_appeal, min_size=2, max_size=40),
    threshold=st.sampled_from([0.0, 0.2, 0.5, 0.6, 0.6, 0.95, 1.0, 1.5]),
    citizen_min=st.sampled_from([0.0, 0.3]),
    index_from=st.sampled_from([1, 2, 5, 32]),
)
def test_a_units_earlier_rows_found_through_prefixes_give_the_same_verdicts(
    rows: list[dict[str, Any]], threshold: float, citizen_min: float, index_from: int
) -> None:
    policy = RepeatPolicy(text_similarity=threshold, citizen_min_similarity=citizen_min)
    appeals = [
        Appeal(
            received_at=T0 + timedelta(minutes=r["minutes"]),
            text="",
            shingles=(r["base"] | r["extra"]) - r["drop"],
            ticket_id=f"T{n}",
            citizen_hash=r["citizen"],
            grid_code=r["grid"],
            address_key=r["address"],
        )
        for n, r in enumerate(rows)
    ]
    appeals.sort(key=lambda a: a.received_at)
    with mock.patch.object(repeat_lookup, "INDEX_FROM", index_from):
        assert _judged(appeals, policy, indexed=True) == _judged(appeals, policy, indexed=False)


def test_a_file_of_one_grid_judges_its_rows_against_fewer_candidates() -> None:
    """Rows of one grid whose texts share nothing but the place are not compared."""
    policy = RepeatPolicy()
    texts = [frozenset(range(10 * (n % 5), 10 * (n % 5) + 10)) | {1000, 1001} for n in range(60)]
    in_unit = EarlierInUnit(policy, [sorted(t) for t in texts])
    sizes = []
    for n, grams in enumerate(texts):
        a = Appeal(received_at=T0, text="", shingles=grams, ticket_id=f"T{n}", grid_code="g1")
        found = in_unit.candidates(keys_of(a), f"T{n}", sorted(grams))
        sizes.append(len(found))
        in_unit.add(keys_of(a), Earlier(a, 0), sorted(grams))
    assert sizes[repeat_lookup.INDEX_FROM - 1] == repeat_lookup.INDEX_FROM - 1  # not yet indexed
    assert max(sizes[repeat_lookup.INDEX_FROM + 1 :]) <= 60 // 5  # its own text's rows only


# --- stored candidates compared packed, a group at once -----------------------------------------

_gram_sets = st.lists(st.integers(0, 2**32 - 1), max_size=12) | st.lists(
    st.integers(0, 30), max_size=25
)


def _packed_as_stored(values: list[int], shuffled: bool) -> bytes:
    """Bytes as ``pack_shingles`` stores them, or (``shuffled``) unsorted with duplicates, as a
    store written otherwise might hold them; ``unpack_shingles`` reads both as a set."""
    if not shuffled:
        return repeat_lookup.pack_shingles(frozenset(values))
    return b"".join(v.to_bytes(4, "little") for v in [*values, *values[:2]])


@settings(max_examples=300, deadline=None)
@given(
    news=st.lists(_gram_sets, min_size=1, max_size=6),
    olds=st.lists(st.tuples(_gram_sets, st.booleans()), min_size=1, max_size=6),
    data=st.data(),
)
def test_common_counts_of_packed_sets_are_the_set_intersections(
    news: list[list[int]], olds: list[tuple[list[int], bool]], data: st.DataObject
) -> None:
    packed = [_packed_as_stored(values, shuffled) for values, shuffled in olds]
    b_values, b_bounds = repeat_lookup.packed_sets(packed)
    for n, data_n in enumerate(packed):
        got = b_values[b_bounds[n] : b_bounds[n + 1]].tolist()
        assert got == sorted(repeat_lookup.unpack_shingles(data_n))
    sets = [frozenset(v) for v in news]
    a_values = np.fromiter(chain.from_iterable(sets), dtype=np.uint32)
    a_bounds = np.concatenate(([0], np.cumsum([len(s) for s in sets]))).astype(np.int64)
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, len(news) - 1), st.integers(0, len(olds) - 1)))
    )
    pair_a = np.array([a for a, _ in pairs], dtype=np.int64)
    pair_b = np.array([b for _, b in pairs], dtype=np.int64)
    counts = repeat_lookup.common_counts(a_values, a_bounds, b_values, b_bounds, pair_a, pair_b)
    assert counts.tolist() == [
        len(sets[a] & repeat_lookup.unpack_shingles(packed[b])) for a, b in pairs
    ]


_stored = st.fixed_dictionaries(
    {
        "base": st.sampled_from(_BASES),
        "extra": st.frozensets(st.integers(0, 45), max_size=4),
        "drop": st.frozensets(st.integers(0, 45), max_size=8),
        "days": st.integers(-2, 40),
        "citizen": st.sampled_from([None, "", "h1", "h2", "h3"]),
        "grid": st.sampled_from([None, "g1", "g1", "g2"]),
        "address": st.sampled_from([None, "a1", "a1", "a2"]),
        "repeat_of": st.sampled_from([None, "T0"]),
        "count": st.sampled_from([0, 0, 0, 1, 5]),  # mostly first appeals: the matches count
        "shuffled": st.booleans(),
    }
)


@settings(max_examples=400, deadline=None)
@given(
    news=st.lists(_stored, min_size=1, max_size=8),
    olds=st.lists(_stored, max_size=12),
    data=st.data(),
    threshold=st.sampled_from([0.0, 0.2, 0.5, 0.6, 0.6, 0.95, 1.0, 1.5]),
    citizen_min=st.sampled_from([0.0, 0.3, 0.9]),
)
def test_stored_candidates_judged_packed_give_the_same_verdicts(
    news: list[dict[str, Any]],
    olds: list[dict[str, Any]],
    data: st.DataObject,
    threshold: float,
    citizen_min: float,
) -> None:
    """``judge_stored`` decides a group's stored candidates on their packed sets as ``decide``
    does pair by pair (the per-pair Jaccard of the unpacked sets): ``decide`` over what it hands
    over (the first of its matches standing for all, the candidates it passes on with their
    counts) is ``decide`` over every candidate — the same ``repeat_of`` among ties, the same
    count and reason."""
    policy = RepeatPolicy(text_similarity=threshold, citizen_min_similarity=citizen_min)
    now = T0 + timedelta(days=35)

    def make(r: dict[str, Any], ticket_id: str, at: datetime) -> Appeal:
        return Appeal(
            received_at=at,
            text="",
            shingles=(r["base"] | r["extra"]) - r["drop"],
            ticket_id=ticket_id,
            citizen_hash=r["citizen"],
            grid_code=r["grid"],
            address_key=r["address"],
            repeat_of=r["repeat_of"],
        )

    appeals = [make(r, f"N{n}", now - timedelta(days=r["days"] % 3)) for n, r in enumerate(news)]
    stored = [
        Earlier(make(r, _stored_id(n, r), now - timedelta(days=r["days"])), r["count"])
        for n, r in enumerate(olds)
    ]
    packed = [
        _packed_as_stored(sorted(e.appeal.shingles), r["shuffled"])
        for e, r in zip(stored, olds, strict=True)
    ]
    listed = [
        data.draw(st.lists(st.integers(0, len(olds) - 1), unique=True)) if olds else []
        for _ in appeals
    ]
    judged = repeat_lookup.judge_stored(appeals, listed, _stored_columns(stored, packed), policy)
    # the appeals' grams handed packed, as the pipeline has them (a stored set stored as the
    # very bytes of an appeal's is taken as shared whole, uncounted), judge the same
    grams = [repeat_lookup.pack_shingles(a.shingles) for a in appeals]
    # a few pairs judged in plain Python, many in numpy: the same judgement either way
    for plain_pairs in (0, 10**6):
        with mock.patch.object(repeat_lookup, "PLAIN_PAIRS", plain_pairs):
            columns = _stored_columns(stored, packed)
            assert repeat_lookup.judge_stored(appeals, listed, columns, policy) == judged
            columns = _stored_columns(stored, packed)
            assert repeat_lookup.judge_stored(appeals, listed, columns, policy, grams) == judged
    # handed over as the look-up makes them: without their shingles, the pass's counts instead
    handed = repeat_lookup.hand_over(appeals, judged, _without_shingles(stored))
    for new, candidates, each, given_ in zip(appeals, listed, judged, handed, strict=True):
        for n, common, size in each.passed:
            assert n in candidates
            assert size == len(stored[n].appeal.shingles)
            shared = len(new.shingles & stored[n].appeal.shingles)
            # counted wherever both sets have grams (a Jaccard of an empty set is 0 uncounted)
            assert common == shared if new.shingles and stored[n].appeal.shingles else common == -1
        assert all(not e.appeal.shingles for e in given_)
        assert decide(new, given_, policy) == decide(new, [stored[n] for n in candidates], policy)


def test_a_stored_set_cut_short_is_refused_by_both_judgements() -> None:
    """A stored set that is not a whole number of uint32s fails its group's judgement in plain
    Python as in numpy (and not when the citizen alone decides, in neither)."""
    policy = RepeatPolicy()
    new = Appeal(received_at=T0, text="", shingles=frozenset({1, 2}), ticket_id="N0")
    old = Earlier(dataclasses.replace(new, ticket_id="T1", citizen_hash="h1"), 0)
    columns = _stored_columns([old], [b"\x01\x00\x00\x00\x02"])
    for plain_pairs in (0, 10**6):
        with mock.patch.object(repeat_lookup, "PLAIN_PAIRS", plain_pairs):
            try:
                repeat_lookup.judge_stored([new], [[0]], columns, policy)
            except ValueError:
                continue
            raise AssertionError(f"not refused with PLAIN_PAIRS={plain_pairs}")
    mine = dataclasses.replace(new, citizen_hash="h1")
    for plain_pairs in (0, 10**6):
        with mock.patch.object(repeat_lookup, "PLAIN_PAIRS", plain_pairs):
            (judged,) = repeat_lookup.judge_stored([mine], [[0]], columns, policy)
            assert (judged.first, judged.matches, judged.reason) == (0, 1, "same_citizen")


def test_plain_judgement_reads_stored_sets_unpacked_only_when_many_appeals_share_them() -> None:
    """In plain Python a stored candidate of one or two appeals of the group is compared on its
    packed values, unpacked into no set, and one failing the size bound is not read at all; one
    shared by ``_UNPACKED_FROM`` appeals is unpacked once for them all. The verdicts are those
    of the sets unpacked (and of a machine whose ``I`` is not a little-endian uint32)."""
    policy = RepeatPolicy(text_similarity=0.5)
    base = frozenset(range(100, 140))
    appeals = [
        Appeal(
            received_at=T0,
            text="",
            shingles=base | {n},
            ticket_id=f"N{n}",
            citizen_hash=f"c{n}",
            grid_code="g",
        )
        for n in range(4)
    ]
    stored = [
        Earlier(Appeal(T0 - timedelta(hours=1), "", base | {7}, "T0", "x", "g"), 0),
        Earlier(Appeal(T0 - timedelta(hours=2), "", base | {8}, "T1", "x", None), 1),
        Earlier(Appeal(T0 - timedelta(hours=3), "", frozenset(range(5)), "T2", "x", "g"), 0),
        Earlier(Appeal(T0 - timedelta(hours=4), "", base | {9}, "T3", "x", "g"), 2),
    ]
    packed = [repeat_lookup.pack_shingles(e.appeal.shingles) for e in stored]
    listed = [[0, 1, 2], [1, 2], [3], [3, 1]]  # T2 (5 grams against 41) fails the size bound
    read: list[bytes] = []
    unpack = repeat_lookup.unpack_shingles

    def values(data: bytes) -> Any:
        read.append(data)
        return unpack(data)

    assert getattr(repeat_lookup, "_UNPACKED_FROM", 3) == 3
    with (
        mock.patch.object(repeat_lookup, "PLAIN_PAIRS", 10**6),
        mock.patch.object(repeat_lookup, "_stored_values", side_effect=values, create=True),
        mock.patch.object(
            repeat_lookup, "unpack_shingles", wraps=repeat_lookup.unpack_shingles
        ) as unpacked,
    ):
        judged = repeat_lookup.judge_stored(
            appeals, listed, _stored_columns(stored, packed), policy
        )
    # T1 (no grid: passed on) a candidate of three appeals: unpacked once; T0 and T3 read packed
    assert [call.args[0] for call in unpacked.call_args_list] == [packed[1]]
    assert read == [packed[0], packed[3], packed[3]]
    assert [(j.first, j.matches, j.passed) for j in judged] == [
        (0, 1, [(1, 40, 41)]),
        (-1, 0, [(1, 40, 41)]),
        (3, 1, []),
        (3, 1, [(1, 40, 41)]),
    ]
    for native in (True, False):
        with (
            mock.patch.object(repeat_lookup, "PLAIN_PAIRS", 10**6),
            mock.patch.object(repeat_lookup, "_NATIVE_UINT32", native),
        ):
            columns = _stored_columns(stored, packed)
            assert repeat_lookup.judge_stored(appeals, listed, columns, policy) == judged
    handed = repeat_lookup.hand_over(appeals, judged, _without_shingles(stored))
    for new, candidates, given_ in zip(appeals, listed, handed, strict=True):
        assert decide(new, given_, policy) == decide(new, [stored[n] for n in candidates], policy)


def test_plain_judgement_leaves_the_rest_of_a_stored_set_unread_once_its_head_rules_it_out() -> (
    None
):
    """A stored set of 200 grams sharing few with the appeal is refused on its first values:
    the rest is never read (``_stored_values`` not called for it); one near the threshold, and
    those of the same citizen, whose own similarity (0.2) allows too many misses for the first
    values to tell, are read whole. The judgement is the numpy pass's and ``decide``'s."""
    policy = RepeatPolicy(text_similarity=0.6, citizen_min_similarity=0.2)
    mine = frozenset(range(1000, 1200))
    new = Appeal(
        received_at=T0, text="", shingles=mine, ticket_id="N", citizen_hash="h", grid_code="g"
    )

    def stored_ticket(k: int, shared: int, citizen: str) -> Earlier:
        grams = frozenset(range(1000, 1000 + shared)) | frozenset(range(5000, 5200 - shared))
        return Earlier(Appeal(T0 - timedelta(hours=k + 1), "", grams, f"T{k}", citizen, "g"), 0)

    stored = [
        stored_ticket(0, 20, "x"),  # far below 0.6: refused on its head
        stored_ticket(1, 160, "x"),  # 160 / 240: a match, read whole
        stored_ticket(2, 140, "x"),  # 140 / 260 = 0.54: near, read whole, not a match
        stored_ticket(3, 70, "h"),  # the same citizen, 70 / 330 = 0.21 >= 0.2: read whole
        stored_ticket(4, 10, "h"),  # below 0.2, but 0.2 allows too many misses to tell early
    ]
    packed = [repeat_lookup.pack_shingles(e.appeal.shingles) for e in stored]
    judged, read = _judged_plain_reading(new, stored, packed, policy)
    assert read == [packed[1], packed[2], packed[3], packed[4]]
    _as_numpy_and_decide_judge(new, stored, packed, policy, judged)
    assert decide(new, stored, policy) == Verdict(
        repeat_of="T3", repeat_count=2, reason="same_citizen"
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 260), st.integers(0, 60), st.booleans(), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([0.3, 0.5, 0.6, 0.9]),
    st.sampled_from([0.0, 0.1, 0.5]),
)
def test_plain_judgement_of_long_stored_sets_is_the_numpy_pass_and_decide(
    drawn: list[tuple[int, int, bool, bool]], threshold: float, citizen_min: float
) -> None:
    """Long stored sets (sharing 0 to all of the appeal's 200 grams, some stored unsorted with
    repeats, some of the appeal's citizen): the plain judgement, refusing some on their first
    values, is the numpy pass's, and ``decide`` over its hand-over is ``decide`` over all."""
    policy = RepeatPolicy(text_similarity=threshold, citizen_min_similarity=citizen_min)
    mine = frozenset(range(1000, 1200))
    new = Appeal(
        received_at=T0, text="", shingles=mine, ticket_id="N", citizen_hash="h", grid_code="g"
    )
    stored, packed = [], []
    for k, (shared, extra, same, messy) in enumerate(drawn):
        grams = frozenset(range(1200 - min(shared, 200), 1200)) | frozenset(
            range(9000, 9000 + max(shared - 200, 0) + extra)
        )
        stored.append(
            Earlier(
                Appeal(T0 - timedelta(minutes=k + 1), "", grams, f"T{k}", "h" if same else "x"),
                k % 3,
            )
        )
        data = repeat_lookup.pack_shingles(grams)
        if messy and grams:
            values = sorted(grams, reverse=True)
            data = np.array(values + values[:7], dtype="<u4").tobytes()
        packed.append(data)
    listed = [list(range(len(stored)))]
    for bucketed_from in (0, 10**6):  # bounded by the buckets first, or not
        with (
            mock.patch.object(repeat_lookup, "PLAIN_PAIRS", 10**6),
            mock.patch.object(repeat_lookup, "BUCKETED_FROM", bucketed_from, create=True),
        ):
            columns = _stored_columns(stored, packed)
            plain = repeat_lookup.judge_stored([new], listed, columns, policy)
            grams = [repeat_lookup.pack_shingles(new.shingles)]
            assert repeat_lookup.judge_stored([new], listed, columns, policy, grams) == plain
        _as_numpy_and_decide_judge(new, stored, packed, policy, plain)


def test_plain_judgement_reads_no_stored_set_its_bucket_counts_rule_out() -> None:
    """A group of enough pairs bounds each by its sets' counts of values a bucket: stored sets
    of hashed grams sharing a fifth of the appeal's are never read; the one sharing nearly all
    is, and matches. The judgement is the numpy pass's and ``decide``'s."""
    policy = RepeatPolicy()
    rng = np.random.default_rng(7)
    pool = rng.choice(2**32, size=4000, replace=False).astype(np.int64).tolist()
    mine = frozenset(pool[:160])
    new = Appeal(
        received_at=T0, text="", shingles=mine, ticket_id="N", citizen_hash="h", grid_code="g"
    )
    stored = []
    for k in range(getattr(repeat_lookup, "BUCKETED_FROM", 12)):
        shared = 150 if k == 5 else 32
        grams = frozenset(pool[:shared] + pool[200 + 150 * k : 200 + 150 * k + 160 - shared])
        stored.append(Earlier(Appeal(T0 - timedelta(hours=k + 1), "", grams, f"T{k}", "x", "g"), 0))
    packed = [repeat_lookup.pack_shingles(e.appeal.shingles) for e in stored]
    # no stored set's first values read apart: only the buckets can leave a set unread
    judged, read = _judged_plain_reading(
        new, stored, packed, policy, _stored_head=lambda data, count: None
    )
    assert read == [packed[5]]
    assert (judged[0].first, judged[0].matches) == (5, 1)
    _as_numpy_and_decide_judge(new, stored, packed, policy, judged)


def _judged_plain_reading(
    new: Appeal, stored: list[Earlier], packed: list[bytes], policy: RepeatPolicy, **patched: Any
) -> tuple[list[repeat_lookup.Judged], list[bytes]]:
    """The plain judgement of ``new`` against every stored candidate (``patched``: names of
    ``repeat_lookup`` replaced meanwhile), and the packed sets it read whole, in order."""
    read: list[bytes] = []
    values = repeat_lookup._stored_values

    def reading(data: bytes) -> Any:
        read.append(data)
        return values(data)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(repeat_lookup, "PLAIN_PAIRS", 10**6))
        stack.enter_context(mock.patch.object(repeat_lookup, "_stored_values", reading))
        for name, value in patched.items():
            stack.enter_context(mock.patch.object(repeat_lookup, name, value, create=True))
        listed = [list(range(len(stored)))]
        judged = repeat_lookup.judge_stored([new], listed, _stored_columns(stored, packed), policy)
    return judged, read


def _as_numpy_and_decide_judge(
    new: Appeal,
    stored: list[Earlier],
    packed: list[bytes],
    policy: RepeatPolicy,
    plain: list[repeat_lookup.Judged],
) -> None:
    """``plain`` (the plain judgement of ``new`` against every stored candidate) is the numpy
    pass's, and ``decide`` over its hand-over is ``decide`` over all."""
    listed = [list(range(len(stored)))]
    with mock.patch.object(repeat_lookup, "PLAIN_PAIRS", 0):
        numpy_pass = repeat_lookup.judge_stored(
            [new], listed, _stored_columns(stored, packed), policy
        )
    assert numpy_pass == plain
    handed = repeat_lookup.hand_over([new], plain, _without_shingles(stored))[0]
    assert decide(new, handed, policy) == decide(new, stored, policy)


def _without_shingles(stored: list[Earlier]) -> Any:
    """Stored candidate ``n`` as the look-up makes it: without its shingles."""

    def made(n: int) -> Earlier:
        e = stored[n]
        return Earlier(dataclasses.replace(e.appeal, shingles=frozenset()), e.repeat_count)

    return made


def _stored_id(n: int, r: dict[str, Any]) -> str:
    """A stored ticket's id; now and then the first new appeal's own (which it never repeats)."""
    return "N0" if n == 0 and r["count"] == 5 else f"T{n + 1}"


def _stored_columns(stored: list[Earlier], packed: list[bytes]) -> repeat_lookup.Stored:
    return repeat_lookup.Stored(
        ticket_ids=[e.appeal.ticket_id or "" for e in stored],
        received_at=[e.appeal.received_at for e in stored],
        citizens=[e.appeal.citizen_hash for e in stored],
        grids=[e.appeal.grid_code for e in stored],
        addresses=[e.appeal.address_key for e in stored],
        repeat_counts=[e.repeat_count for e in stored],
        packed=packed,
    )


def test_stored_matches_are_handed_over_as_their_first_and_strangers_not_at_all() -> None:
    """A grid's stored tickets of other texts and other citizens are dropped before any
    ``Earlier`` is made of them; the matches (the same citizen's, the same text's) are handed
    over as the first of them, standing for both."""
    policy = RepeatPolicy()
    texts = [frozenset(range(10 * k, 10 * k + 10)) | {1000, 1001} for k in range(5)]
    new = Appeal(
        received_at=T0, text="", shingles=texts[0], ticket_id="N", citizen_hash="h1", grid_code="g"
    )
    stored = [
        Earlier(
            Appeal(
                received_at=T0 - timedelta(days=1, minutes=k),
                text="",
                shingles=t,
                ticket_id=f"T{k}",
                citizen_hash=["h2", "h2", "h1", "h3", "h2"][k],
                grid_code="g",
            ),
            0,
        )
        for k, t in enumerate(texts)
    ]
    packed = [repeat_lookup.pack_shingles(t) for t in texts]
    judged = repeat_lookup.judge_stored(
        [new], [[0, 1, 2, 3, 4]], _stored_columns(stored, packed), policy
    )
    assert judged == [
        repeat_lookup.Judged([], first=2, matches=2, longest=1, reason="same_citizen")
    ]
    handed = repeat_lookup.hand_over([new], judged, _without_shingles(stored))[0]
    assert decide(new, handed, policy) == (
        Verdict(repeat_of="T2", repeat_count=2, reason="same_citizen")
    )


def _a_citizens_chain() -> list[Earlier]:
    """Three stored tickets of citizen ``h`` an hour apart, the oldest (``T2``) leading the
    chain the other two repeat."""
    return [
        Earlier(
            Appeal(
                received_at=T0 - timedelta(hours=k + 1),
                text="",
                shingles=frozenset(),
                ticket_id=f"T{k}",
                citizen_hash="h",
                repeat_of=None if k == 2 else "T2",
            ),
            2 - k,
        )
        for k in range(3)
    ]


def test_a_citizens_own_stored_tickets_are_judged_without_their_shingles() -> None:
    """When every stored candidate is the appeal's own citizen's and no similarity is required
    (a citizen calling again), their shingles are not read at all (these bytes would not even
    unpack) and the appeal repeats them all."""
    policy = RepeatPolicy()
    new = Appeal(
        received_at=T0, text="", shingles=frozenset({1, 2}), ticket_id="N", citizen_hash="h"
    )
    stored = _a_citizens_chain()
    judged = repeat_lookup.judge_stored(
        [new], [[0, 1, 2]], _stored_columns(stored, [b"\x00"] * 3), policy
    )
    assert judged == [
        repeat_lookup.Judged([], first=2, matches=3, longest=3, reason="same_citizen")
    ]
    handed = repeat_lookup.hand_over([new], judged, _without_shingles(stored))[0]
    assert decide(new, handed, policy) == decide(new, stored, policy)
    assert decide(new, handed, policy) == Verdict("T2", 3, "same_citizen")


@settings(max_examples=100, deadline=None)
@given(
    citizen=st.sampled_from([None, "", "h1"]),
    grid=st.sampled_from([None, "g1"]),
    address=st.sampled_from([None, "a1"]),
    place=st.sampled_from([(None, None), (120.58, 30.0)]),
    repeat_of=st.sampled_from([None, "T0"]),
    count=st.integers(0, 9),
)
def test_earliers_made_slot_by_slot_are_the_appeals_the_constructor_makes(
    citizen: str | None,
    grid: str | None,
    address: str | None,
    place: tuple[float | None, float | None],
    repeat_of: str | None,
    count: int,
) -> None:
    """A stored candidate made from its row (``_earlier``) and a judged appeal as its unit's
    later rows see it (``judged_earlier``) set their appeal's slots directly: each is the
    ``Earlier`` the dataclasses' constructors make, every field set (one the slots missed would
    not compare)."""
    longitude, latitude = place
    fields = {
        "received_at": T0,
        "text": "",
        "ticket_id": "T1",
        "citizen_hash": citizen,
        "grid_code": grid,
        "address_key": address,
        "longitude": longitude,
        "latitude": latitude,
        "repeat_of": repeat_of,
    }
    row = (0, "T1", T0, citizen, grid, address, longitude, latitude, repeat_of, count, b"")
    stored = repeat_lookup._earlier("T1", row, None)
    assert stored == Earlier(Appeal(shingles=frozenset(), **fields), count)
    new = Appeal(**{**fields, "text": "路灯坏了", "repeat_of": None}, shingles=frozenset({1, 2}))
    judged = repeat_lookup.judged_earlier(new, Verdict(repeat_of, count, "same_citizen"))
    assert judged == Earlier(Appeal(shingles=new.shingles, **fields), count)
    for made in (stored.appeal, judged.appeal):
        assert all(hasattr(made, f.name) for f in dataclasses.fields(Appeal))


def test_a_lone_judged_summary_is_decided_without_the_window_or_the_sets() -> None:
    """An appeal whose stored candidates the group's pass judged alone (a batch row with no
    earlier row of its file beside it) is decided from the summary as it is: no window, no
    shingles read; the verdict is the loop's over the same entry and over every candidate."""
    policy = RepeatPolicy()
    new = Appeal(
        received_at=T0, text="", shingles=frozenset({1, 2, 3}), ticket_id="N", citizen_hash="h"
    )
    stored = _a_citizens_chain()
    judged = repeat_lookup.judge_stored(
        [new], [[0, 1, 2]], _stored_columns(stored, [b""] * 3), policy
    )
    (handed,) = repeat_lookup.hand_over([new], judged, _without_shingles(stored))
    assert len(handed) == 1 and handed[0].judged == (3, 3, "same_citizen")

    class NoWindow:
        """A policy that fails if the window or a threshold is read."""

        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"read {name}")

    assert decide(new, handed, NoWindow()) == Verdict("T2", 3, "same_citizen")  # type: ignore[arg-type]
    assert (
        decide(new, handed, policy)
        == decide(new, stored, policy)
        == Verdict("T2", 3, "same_citizen")
    )
    assert decide(new, [], NoWindow()) is NOT_A_REPEAT  # type: ignore[arg-type]
