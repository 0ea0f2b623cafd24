"""A group's stored candidates paired with its appeals in numpy, as the look-up's rows give them,
and a group of more candidates than the shingle cache holds kept out of it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake import repeat_lookup
from services.intake.repeat_lookup import ShingleCache, pack_shingles
from services.intake.repeats import Appeal, RepeatPolicy

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
COLUMNS = repeat_lookup._KEY_COLUMNS
VALUES = ("a", "b", "c", "d")


def _row(found_by: int, value: str, ticket: int) -> tuple[Any, ...]:
    """A look-up row (the statement's shape) of stored ticket ``ticket`` found by ``value`` in
    column ``found_by``; its other key columns set from the ticket's number alone, so a ticket's
    rows differ in their leading column only (as the statement's do)."""
    keys = [f"{VALUES[ticket % 4]}", f"{VALUES[ticket % 3]}", f"{VALUES[ticket % 2]}"]
    keys[found_by] = value
    return (found_by, f"T{ticket}", T0, *keys, None, None, None, 0, b"")


def _reference(
    wanted: Sequence[tuple[tuple[str, str], ...]], fetched: Sequence[Sequence[Any]]
) -> list[list[int]]:
    """Each appeal's candidates as the look-up listed them one row at a time: a key's rows in
    order (a key seen again extended), an appeal's keys' rows in turn, each ticket once."""
    at: dict[str, int] = {}
    for row in fetched:
        at.setdefault(row[1], len(at))
    found: dict[tuple[str, str], list[int]] = {}
    for row in fetched:
        key = (COLUMNS[row[0]], row[3 + row[0]])
        found.setdefault(key, []).append(at[row[1]])
    return [
        list(dict.fromkeys(chain.from_iterable(found.get(key, ()) for key in keys)))
        for keys in wanted
    ]


key = st.tuples(st.integers(0, 2), st.sampled_from(VALUES))


@settings(max_examples=300, deadline=None)
@given(
    runs=st.lists(st.tuples(key, st.lists(st.integers(0, 11), max_size=6, unique=True))),
    wanted=st.lists(st.lists(key, max_size=3, unique=True), max_size=8),
)
def test_pairs_made_in_numpy_are_the_candidates_listed_row_by_row(
    runs: list[tuple[tuple[int, str], list[int]]], wanted: list[list[tuple[int, str]]]
) -> None:
    """Rows of keys no appeal wants, a key's rows in two runs, appeals sharing keys and tickets
    found through several keys: the pairs are each appeal's candidates, in the order and with
    the duplicates dropped as the row-by-row lists had them."""
    fetched = [_row(n, value, ticket) for (n, value), tickets in runs for ticket in tickets]
    appeals_keys = [tuple((COLUMNS[n], value) for n, value in keys) for keys in wanted]
    by_column: dict[str, set[str]] = {}
    for keys in appeals_keys:
        for column, value in keys:
            by_column.setdefault(column, set()).add(value)
    at: dict[str, int] = {}
    for row in fetched:
        at.setdefault(row[1], len(at))
    found = np.array([at[row[1]] for row in fetched], dtype=np.int64)
    counts, pair_b = repeat_lookup._pairs_of(appeals_keys, by_column, fetched, found)
    expected = _reference(appeals_keys, fetched)
    assert counts.tolist() == [len(listed) for listed in expected]
    assert pair_b.tolist() == list(chain.from_iterable(expected))


class _Rows:
    """``LookupConnections`` that answer the candidate statement with fixed rows."""

    dialect = type("Dialect", (), {"name": "postgresql"})()

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    async def run(self, work: Any) -> Any:
        return await work(self)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.rows


def _appeal(n: int, citizen: str, shingles: frozenset[int]) -> Appeal:
    return Appeal(
        received_at=T0,
        text="",
        shingles=shingles,
        ticket_id=f"N{n}",
        citizen_hash=citizen,
    )


def _load(
    appeals: list[Appeal], rows: list[tuple[Any, ...]], cache: ShingleCache
) -> list[list[Any]]:
    return asyncio.run(
        repeat_lookup.load_earlier(
            _Rows(rows),  # type: ignore[arg-type]
            appeals,
            policy=RepeatPolicy(),
            per_key=5,
            cache=cache,
        )
    )


def _stored(n: int, citizen: str, shingles: frozenset[int]) -> tuple[Any, ...]:
    at = T0 - timedelta(hours=1 + n)
    return (0, f"S{n}", at, citizen, None, None, None, None, None, 0, pack_shingles(shingles))


def test_a_group_of_more_candidates_than_the_cache_holds_leaves_it_as_it_was() -> None:
    """A group whose stored candidates outnumber the cache's places (a batch file's) neither
    reads nor fills it: its candidates are made from their rows, and the ready candidates the
    posts put there stay; a group that fits keeps what it made, as before. The verdicts are
    the same either way."""
    grams = frozenset(range(40))
    small = [_appeal(n, f"c{n}", grams) for n in range(3)]
    cache = ShingleCache(max_ready=4)
    kept = _load(small, [_stored(n, f"c{n}", grams) for n in range(3)], cache)
    assert len(cache) == 3
    ready = {ticket: cache.ready(ticket) for ticket in ("S0", "S1", "S2")}
    big = [_appeal(n, f"c{n}", grams) for n in range(10, 16)]
    rows = [_stored(n, f"c{n}", grams) for n in range(10, 16)]
    handed = _load(big, rows, cache)
    assert len(cache) == 3
    assert {ticket: cache.ready(ticket) for ticket in ready} == ready
    assert {e.appeal.ticket_id for each in handed for e in each} == {f"S{n}" for n in range(10, 16)}
    # the same candidates as a cache that holds them all would hand over
    roomy = _load(big, rows, ShingleCache(max_ready=100))
    assert [[(e.appeal, e.repeat_count, e.judged) for e in each] for each in handed] == [
        [(e.appeal, e.repeat_count, e.judged) for e in each] for each in roomy
    ]
    assert all(kept)
