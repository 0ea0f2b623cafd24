"""Repeat detection against the store: load the earlier appeals a new one may repeat, decide.

The decision itself is ``repeats.find_repeats`` (pure). This module feeds it: for every key of
the new appeals (citizen hash, grid, address key) it loads the latest ``per_key`` tickets inside
the window for a whole group of appeals (every unit the pipeline prepares together: single
posts and batch files): on PostgreSQL one statement for every key column, on SQLite one
statement per key column in one trip to its connection's thread; either way on the driver, on
connections kept between groups (``LookupConnections``).

Counting: ``repeat_of`` is the first ticket of the chain (as ``find_repeats`` says) and
``repeat_count`` is how many earlier appeals the chain holds — the most of the matched tickets'
own counts plus one, or the matches found, whichever is more — so a citizen's tenth call counts
nine earlier ones even though only the latest few are compared.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import sys
from array import array
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import chain, repeat
from operator import eq, itemgetter
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake import repeats
from shared.db import AwareDateTime, plan_each_run, plan_once
from shared.groupcommit import in_sqlite_thread, processor_of

_KEY_COLUMNS = ("citizen_hash", "grid_code", "address_key")
Key = tuple[str, str]  # (key column, value)
_COLUMNS = (
    "ticket_id, received_at, citizen_hash, grid_code, address_key, longitude, latitude, "
    "repeat_of, repeat_count, shingles"
)
# What a candidate found by its citizen alone needs when the citizen alone makes a match
# (``RepeatPolicy.citizen_min_similarity`` <= 0, the default): its time, id, citizen and repeat
# links, not its place or its shingles (a ticket another key found too comes with its full row
# from that key). A batch file of known citizens reads five of theirs a row: their places and
# shingles cost the driver ~1.6 ms and PostgreSQL ~1.1 ms of CPU a 1,000-row file.
_SLIM_COLUMNS = (
    "ticket_id, received_at, citizen_hash, NULL::varchar, NULL::varchar, NULL::float8, "
    "NULL::float8, repeat_of, repeat_count, NULL::bytea"
)
_SLIM_SQLITE_COLUMNS = (
    "t.ticket_id, t.received_at, t.citizen_hash, NULL, NULL, NULL, NULL, t.repeat_of, "
    "t.repeat_count, NULL"
)


def pack_shingles(shingles: frozenset[int]) -> bytes:
    """Shingles as little-endian uint32s, sorted (stable bytes for the same text)."""
    packed = array("I", sorted(shingles))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_shingles(data: bytes | None) -> frozenset[int]:
    """The inverse of ``pack_shingles``."""
    if not data:
        return frozenset()
    packed = array("I")
    packed.frombytes(data)
    if sys.byteorder != "little":
        packed.byteswap()
    return frozenset(packed)


@dataclass(frozen=True, slots=True)
class Earlier:
    """An earlier ticket as repeat detection sees it, with the repeat count it got.

    ``against``, ``common``, ``size`` and ``judged``: a stored candidate already compared with
    the new appeal ``against`` (the very object) in a group's one numpy pass: how many shingles
    the two share and how many its own set holds, which ``decide`` takes instead of reading the
    sets again (a stored candidate's appeal is made without its shingles); and, when the pass
    could judge them, ``(matches, longest, reason)``: this ticket is the first (by time, then
    id) of ``matches`` stored tickets the appeal repeats, the longest chain among them counts
    ``longest`` appeals, and ``reason`` is this ticket's (``decide`` reads its time, id and
    ``repeat_of`` only)."""

    appeal: repeats.Appeal
    repeat_count: int
    against: repeats.Appeal | None = field(default=None, compare=False, repr=False)
    common: int = field(default=0, compare=False, repr=False)
    judged: tuple[int, int, str] | None = field(default=None, compare=False, repr=False)
    size: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What repeat detection decided for one new appeal."""

    repeat_of: str | None = None
    repeat_count: int = 0
    reason: str | None = None

    @property
    def is_repeat(self) -> bool:
        return self.repeat_of is not None


NOT_A_REPEAT = Verdict()


def keys_of(appeal: repeats.Appeal) -> tuple[Key, ...]:
    """The (column, value) pairs an appeal's candidates are found by."""
    keys = []
    if appeal.citizen_hash:
        keys.append(("citizen_hash", appeal.citizen_hash))
    if appeal.grid_code:
        keys.append(("grid_code", appeal.grid_code))
    if appeal.address_key:
        keys.append(("address_key", appeal.address_key))
    return tuple(keys)


def lookup_keys(appeal: repeats.Appeal) -> tuple[tuple[str, str], ...]:
    """The keys to load stored candidates by: an appeal located in a grid finds the tickets at
    its address through the grid, so the address is looked up only without one."""
    keys = keys_of(appeal)
    if appeal.grid_code:
        return tuple(k for k in keys if k[0] != "address_key")
    return keys


def decide(
    new: repeats.Appeal, earlier: Sequence[Earlier], policy: repeats.RepeatPolicy
) -> Verdict:
    """``repeats.find_repeats`` over the candidates, with the chain-aware count.

    The same decision as ``find_repeats`` (a unit test holds them equal), in one loop: no
    match objects for candidates that do not match, no Jaccard where it cannot decide — for
    the same citizen when no similarity is required, and for texts whose sizes alone rule the
    threshold out (Jaccard is at most the smaller set over the larger).
    """
    if len(earlier) <= 1:
        if not earlier:
            return NOT_A_REPEAT
        (e,) = earlier
        if e.judged is not None and e.against is new and e.appeal.ticket_id is not None:
            # the group's pass judged every stored match and handed their first alone (a batch
            # row with no earlier row of its file beside): the loop below, for that one entry
            matches, chain_of, why = e.judged
            return _verdict(
                e.appeal.repeat_of or e.appeal.ticket_id,
                max(matches, e.repeat_count + 1, chain_of),
                why,
            )
    new_id, citizen = new.ticket_id, new.citizen_hash
    since, until = new.received_at - policy.window, new.received_at
    size, threshold = len(new.shingles), policy.text_similarity
    citizen_min = policy.citizen_min_similarity
    found: list[tuple[datetime, str, Earlier, str]] = []
    more = longest = 0  # the stored matches judged in the group's pass, past their first
    for e in earlier:
        old = e.appeal
        ticket_id = old.ticket_id
        if e.judged is not None and e.against is new and ticket_id is not None:
            matches, chain_of, why = e.judged
            found.append((old.received_at, ticket_id, e, why))
            more += matches - 1
            longest = max(longest, chain_of)
            continue
        if ticket_id is None or ticket_id == new_id or not since <= old.received_at <= until:
            continue
        same_citizen = bool(citizen) and citizen == old.citizen_hash
        compared = e.against is new  # its shingles counted in the group's pass, not at hand
        other = e.size if compared else len(old.shingles)
        small, big = (size, other) if size <= other else (other, size)
        if not same_citizen and not (big > 0 and small >= threshold * big):
            continue
        if same_citizen and citizen_min <= 0:
            found.append((old.received_at, ticket_id, e, "same_citizen"))
            continue
        # repeats.jaccard, inline (a call per pair is a measurable share of a batch row):
        # sizes both non-zero here unless the same citizen, where 0 is what jaccard says.
        if compared:
            common = e.common
        elif size and other:
            common = len(new.shingles & old.shingles)
        else:
            common = 0
        similarity = common / (size + other - common) if size and other else 0.0
        if same_citizen and similarity >= citizen_min:
            found.append((old.received_at, ticket_id, e, "same_citizen"))
        elif similarity >= threshold and repeats.same_place(new, old, policy):
            found.append((old.received_at, ticket_id, e, "same_place_similar_text"))
    if not found:
        return NOT_A_REPEAT
    found.sort(key=lambda hit: (hit[0], hit[1]))
    _, first_id, first, reason = found[0]
    counts = {hit[1]: hit[2].repeat_count for hit in found}
    chain = max(counts[hit[1]] + 1 for hit in found)
    return _verdict(
        first.appeal.repeat_of or first_id, max(len(found) + more, chain, longest), reason
    )


_SET_V_REPEAT_OF, _SET_V_COUNT, _SET_V_REASON = (
    Verdict.__dict__[name].__set__ for name in ("repeat_of", "repeat_count", "reason")
)


def _verdict(repeat_of: str | None, repeat_count: int, reason: str | None) -> Verdict:
    """``Verdict(repeat_of, repeat_count, reason)``, its slots set directly (one a batch row)."""
    made = object.__new__(Verdict)
    _SET_V_REPEAT_OF(made, repeat_of)
    _SET_V_COUNT(made, repeat_count)
    _SET_V_REASON(made, reason)
    return made


# A grid's or an address's earlier rows in a unit are candidates as they are up to this many;
# from then on they are found through their texts' prefix grams.
INDEX_FROM = 32


class EarlierInUnit:
    """The appeals of one unit judged so far (a batch file's earlier rows), as candidates for
    the next: every one sharing a key with it, less — once a grid or an address holds
    ``INDEX_FROM`` of them — those whose texts cannot reach the similarity threshold.

    Without it a file of one grid compares each row with every earlier row (a patrol's log
    walks its own grid: 1,000 rows, ~500,000 comparisons). Rows found through a grid or an
    address repeat only by text, Jaccard ≥ t, so sharing at least ``ceil(t·|A|)`` grams for
    either set ``A``; two sets sharing that many have a gram in common among the first
    ``|A| − ceil(t·|A|) + 1`` of each in one fixed order (prefix filtering), so a posting list
    per prefix gram finds every such row. The order is the unit's rarest grams first (a place
    or a phrase every row has comes last and finds nothing), computed once an index is needed.
    The citizen's rows are all kept (the same citizen repeats whatever the text), and
    ``decide`` counts matches only, so its verdict over these candidates is its verdict over
    all of them (a property test holds the two equal). A threshold outside (0, 1] keeps every
    row.
    """

    __slots__ = ("_grams", "_index", "_prefixes", "_rank", "_rows", "_threshold", "_unit")

    def __init__(self, policy: repeats.RepeatPolicy, unit: Sequence[Sequence[int]]) -> None:
        """``unit``: the grams of every appeal of the unit (for the order)."""
        t = policy.text_similarity
        self._threshold = t if 0 < t <= 1 else None
        self._unit = unit
        self._rank: dict[int, int] | None = None
        self._rows: dict[Key, dict[str, Earlier]] = {}
        self._index: dict[Key, dict[int, dict[str, Earlier]]] = {}
        self._grams: dict[str, Sequence[int]] = {}
        self._prefixes: dict[str, list[int]] = {}

    def _prefix(self, ticket_id: str, grams: Sequence[int]) -> list[int]:
        """The grams a match must share one of: the first, rarest first, of the set."""
        found = self._prefixes.get(ticket_id)
        if found is not None:
            return found
        assert self._threshold is not None
        if self._rank is None:
            counts: Counter[int] = Counter()
            for each in self._unit:
                counts.update(each)
            order = sorted(counts, key=lambda gram: (counts[gram], gram))
            self._rank = {gram: at for at, gram in enumerate(order)}
        n = len(grams)
        # At least one shared gram whenever Jaccard ≥ t > 0; the margin keeps a product rounded
        # up from costing a gram that the float comparison in ``decide`` would accept.
        overlap = max(1, math.ceil(self._threshold * n - 1e-6))
        found = sorted(grams, key=self._rank.__getitem__)[: n - overlap + 1] if n else []
        self._prefixes[ticket_id] = found
        return found

    def candidates(
        self, keys: Sequence[Key], ticket_id: str, grams: Sequence[int]
    ) -> dict[str, Earlier]:
        """The earlier appeals, by ticket id, that a new one may repeat."""
        found: dict[str, Earlier] = {}
        for key in keys:
            rows = self._rows.get(key)
            if not rows:
                continue
            index = self._index.get(key)
            if index is None:
                found.update(rows)
                continue
            for gram in self._prefix(ticket_id, grams):
                posting = index.get(gram)
                if posting is not None:
                    found.update(posting)
        return found

    def add(self, keys: Sequence[Key], earlier: Earlier, grams: Sequence[int]) -> None:
        """One more judged appeal, found by its keys (through its prefix once indexed)."""
        ticket_id = earlier.appeal.ticket_id
        assert ticket_id is not None
        self._grams[ticket_id] = grams
        for key in keys:
            rows = self._rows.get(key)
            if rows is None:
                rows = self._rows[key] = {}
            rows[ticket_id] = earlier
            if self._threshold is None or key[0] == "citizen_hash":
                continue
            index = self._index.get(key)
            if index is None:
                if len(rows) < INDEX_FROM:
                    continue
                index = self._index[key] = {}
                members: Iterable[tuple[str, Earlier]] = rows.items()
            else:
                members = ((ticket_id, earlier),)
            for other_id, other in members:
                for gram in self._prefix(other_id, self._grams[other_id]):
                    posting = index.get(gram)
                    if posting is None:
                        index[gram] = {other_id: other}
                    else:
                        posting[other_id] = other


@cache
def _sqlite_candidates(column: str, per_key: int, slim: bool = False) -> str:
    """The latest ``per_key`` tickets for each of many keys of one column, in one statement
    (``slim``: in ``_SLIM_COLUMNS``).

    SQLite has no LATERAL, but a ``rowid IN (correlated subquery)`` join over ``json_each`` is
    planned the same way: one index range scan per key, stopped after ``per_key`` rows.
    """
    if column not in _KEY_COLUMNS:
        raise ValueError(column)
    window = "received_at >= :since AND received_at <= :until"
    columns = (
        _SLIM_SQLITE_COLUMNS if slim else ", ".join(f"t.{c.strip()}" for c in _COLUMNS.split(","))
    )
    return (
        f"SELECT {columns} FROM json_each(:keys) AS k JOIN tickets AS t ON t.rowid IN "
        f"(SELECT rowid FROM tickets WHERE {column} = k.value AND {window} "
        f"ORDER BY received_at DESC LIMIT {int(per_key)})"
    )


class ShingleCache:
    """What repeat detection keeps of recent stored candidates, by id: their ready ``Earlier``
    as ``decide`` takes a stored one (without its shingles: the group's pass has counted them),
    bounded, least recently used out first. A stored ticket's keys, time and repeat links never
    change, so none goes stale. (Their packed shingles come with each look-up's rows.)

    No shingle set is kept here: a set of a few hundred ints, alive for the cache's life, is
    read through by every full collection of the garbage collector (~25 us a set)."""

    def __init__(self, max_ready: int = 2048) -> None:
        self._max_ready = max_ready
        self._ready: OrderedDict[str, Earlier] = OrderedDict()

    @property
    def max_ready(self) -> int:
        """How many ready candidates it keeps at most."""
        return self._max_ready

    def ready(self, ticket_id: str) -> Earlier | None:
        found = self._ready.get(ticket_id)
        if found is not None:
            self._ready.move_to_end(ticket_id)
        return found

    def keep(self, earlier: Earlier) -> None:
        if self._max_ready <= 0 or earlier.appeal.ticket_id is None:
            return
        self._ready[earlier.appeal.ticket_id] = earlier
        while len(self._ready) > self._max_ready:
            self._ready.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ready)


@cache
def _postgres_candidates(per_key: int, slim_citizens: bool = False) -> str:
    """Every key column's candidates in one statement (one round trip, one plan, cached by the
    driver): a LATERAL join per column over its array of keys, one index range scan per key,
    stopped after ``per_key`` rows. Each row says which column found it; ``slim_citizens``:
    the citizen's in ``_SLIM_COLUMNS``.

    The look-up's connections plan it once (``LookupConnections``), so its generic plan must be
    each key's index whatever the statistics. Each key is written as a range of one value and
    leads the order: with ``column = k.v`` the key's order is redundant, and on a table where
    most tickets share one key the generic plan walked the ``received_at`` index filtering by
    key — for any other key the whole window. A range of a parameter is estimated at the
    planner's default selectivity, and only the key's index gives its order. Same rows."""
    limit = int(per_key)
    window = "received_at >= $4 AND received_at <= $5"
    return " UNION ALL ".join(
        f"SELECT {n} AS found_by, c.* FROM unnest(${n + 1}::varchar[]) AS k(v) CROSS JOIN LATERAL "
        f"(SELECT {_SLIM_COLUMNS if slim_citizens and n == _CITIZEN else _COLUMNS} FROM tickets "
        f"WHERE {column} >= k.v AND {column} <= k.v AND {window} "
        f"ORDER BY {column} DESC, received_at DESC LIMIT {limit}) AS c"
        for n, column in enumerate(_KEY_COLUMNS)
    )


# A candidate row: (index of the key column that found it, then _COLUMNS in order).
_FOUND_BY, _TICKET_ID, _RECEIVED_AT = 0, 1, 2
_CITIZEN = _KEY_COLUMNS.index("citizen_hash")  # the found_by of a row its citizen found
_KEY_AT = 3  # citizen_hash, grid_code, address_key follow in _KEY_COLUMNS order
_SHINGLES = 10

T = TypeVar("T")
_Held = tuple[AsyncConnection, Any]  # a checked-out connection and its driver's connection


class LookupConnections:
    """The repeat look-ups' connections: checked out of the engine's pool once and kept between
    groups, each look-up's statements sent on the driver itself (asyncpg's ``fetch``; on
    SQLite one trip to aiosqlite's thread). A look-up through SQLAlchemy checked a connection
    out, began and rolled back a transaction and returned it for every group, each step a
    greenlet hop (on SQLite a hop to aiosqlite's thread and back). SQLAlchemy begins nothing
    on a connection it does not execute on, so each statement is its own (autocommit) read.

    As many are kept as run at once (a group's look-up each), at most ``keep``. One the server
    closed is replaced before use; one that failed is discarded, and a statement that failed
    on a kept connection is sent once more on a fresh one (a look-up only reads), so a
    connection that broke between groups costs no group its answer. ``close`` (at the
    service's stop) returns them to the pool."""

    def __init__(self, engine: AsyncEngine, *, keep: int = 2) -> None:
        self._engine = engine
        self.dialect = engine.dialect
        self._keep = keep
        self._idle: list[_Held] = []
        self._closed = False

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """``work(driver connection)`` on a kept connection (once more on a fresh one if a kept
        one fails)."""
        held, kept = await self._take()
        try:
            result = await work(held[1])
        except Exception:
            await _let_go(held, invalidate=True)
            if not kept:
                raise
            held, _ = await self._check_out(), False
            try:
                result = await work(held[1])
            except BaseException:
                await _let_go(held, invalidate=True)
                raise
        except BaseException:  # cancelled mid-statement: its exchange may be half done
            await _let_go(held, invalidate=True)
            raise
        if self._closed or len(self._idle) >= self._keep:
            await _let_go(held)
        else:
            self._idle.append(held)
        return result

    async def _take(self) -> tuple[_Held, bool]:
        while self._idle:
            held = self._idle.pop()
            is_closed = getattr(held[1], "is_closed", None)  # asyncpg knows a closed socket
            if is_closed is None or not is_closed():
                return held, True
            await _let_go(held, invalidate=True)
        return await self._check_out(), False

    async def _check_out(self) -> _Held:
        conn = await self._engine.connect()
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            if self.dialect.name == "postgresql":
                await plan_once(conn, driver)  # the look-up's statement is written for it
        except BaseException:
            await _let_go((conn, None), invalidate=True)
            raise
        return conn, driver

    async def close(self) -> None:
        """Return the kept connections to the pool; a look-up still running returns its own."""
        self._closed = True
        idle, self._idle = self._idle, []
        for held in idle:
            await _let_go(held)


async def _let_go(held: _Held, *, invalidate: bool = False) -> None:
    """Return a connection to its pool (closed for good if ``invalidate``), planning each run
    again like the pool's others."""
    with contextlib.suppress(Exception):
        if invalidate or not await plan_each_run(*held):
            await held[0].invalidate()
        await held[0].close()


def _sqlite_reads(
    conn: sqlite3.Connection, statements: Sequence[tuple[int, str, Any]]
) -> list[tuple[Any, ...]]:
    """On aiosqlite's thread: each statement's rows, each led by the statement's tag."""
    rows: list[tuple[Any, ...]] = []
    for n, sql, params in statements:
        rows.extend((n, *row) for row in conn.execute(sql, params))
    return rows


@cache
def _sqlite_times(dialect: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``AwareDateTime``'s bind and result processors on SQLite: what SQLAlchemy would do with
    the window's ends and the candidates' ``received_at``."""
    impl = AwareDateTime().dialect_impl(dialect)
    bind, result = processor_of(impl, dialect), impl.result_processor(dialect, None)
    assert bind is not None and result is not None
    return bind, result


async def _candidate_rows(
    connections: LookupConnections,
    by_column: dict[str, set[str]],
    *,
    since: datetime,
    until: datetime,
    per_key: int,
    slim: bool = False,
) -> list[Sequence[Any]]:
    """The candidate rows of every key, each led by the index of the column that found it;
    ``slim``: those its citizen found in ``_SLIM_COLUMNS``."""
    dialect = connections.dialect
    if dialect.name == "postgresql":
        keys = [sorted(by_column.get(column, ())) for column in _KEY_COLUMNS]
        sql = _postgres_candidates(per_key, slim)
        return list(await connections.run(lambda driver: driver.fetch(sql, *keys, since, until)))
    bind, result = _sqlite_times(dialect)
    window = {"since": bind(since), "until": bind(until)}
    statements = [
        (
            n,
            _sqlite_candidates(column, per_key, slim and n == _CITIZEN),
            {"keys": json.dumps(sorted(by_column[column])), **window},
        )
        for n, column in enumerate(_KEY_COLUMNS)
        if column in by_column
    ]
    rows = await connections.run(lambda driver: in_sqlite_thread(driver, _sqlite_reads, statements))
    at = _RECEIVED_AT
    return [(*row[:at], result(row[at]), *row[at + 1 :]) for row in rows]


async def load_earlier(
    connections: LookupConnections,
    appeals: Sequence[repeats.Appeal],
    *,
    policy: repeats.RepeatPolicy,
    per_key: int,
    cache: ShingleCache | None = None,
    grams: Sequence[bytes] | None = None,
    slim: bool | None = None,
) -> list[list[Earlier]]:
    """For each appeal, the latest earlier tickets sharing one of its keys within the window
    that it may repeat; ``grams``: each appeal's shingles packed (``pack_shingles``), if the
    caller has them so (else they are read from its set); ``slim``: whether the candidates
    only a citizen found are read without their place and shingles (by default where the
    policy lets the citizen alone make a match; the same verdicts either way, a test holds).

    One trip, on the look-ups' kept connections: the candidates of every key with their stored
    shingles (one statement on PostgreSQL, one per key column on SQLite); a separate read of
    the shingles the cache lacked cost a second trip whenever another process had stored a
    candidate (the other worker, most groups). The candidates' shingles stay packed:
    ``judge_stored`` judges them against every appeal of the group in one numpy pass; an
    appeal is handed the first of its stored matches standing for them all and the few
    candidates whose place only ``same_place`` can tell, and only those are made into
    ``Earlier`` objects, without their shingles (the pass hands over their counts).
    """
    wanted = [lookup_keys(a) for a in appeals]
    by_column: dict[str, set[str]] = {}
    for keys in wanted:
        for column, value in keys:
            by_column.setdefault(column, set()).add(value)
    if not by_column:
        return [[] for _ in appeals]
    cache = cache if cache is not None else ShingleCache(0)
    since = min(a.received_at for a in appeals) - policy.window
    until = max(a.received_at for a in appeals)
    # The citizen alone makes a match: a candidate only its citizen found is read without its
    # place and shingles (``_SLIM_COLUMNS``), which no test of its pairs reads.
    if slim is None:
        slim = policy.citizen_min_similarity <= 0
    elif slim and policy.citizen_min_similarity > 0:
        raise ValueError("a citizen's candidates need their shingles when it needs a similarity")
    fetched = await _candidate_rows(
        connections, by_column, since=since, until=until, per_key=per_key, slim=slim
    )
    # A ticket's row is the same whichever key found it (but for the leading column, and but
    # for a slim one): each distinct ticket once, in order of first appearance, read from one
    # of its rows — a full one where another key found it too (a dict keeps a key's first place
    # and its last value) —, the columns taken a column at a time.
    found_ids = list(map(itemgetter(_TICKET_ID), fetched))
    where = dict(zip(found_ids, range(len(fetched)), strict=True))
    found_by = np.fromiter(map(itemgetter(_FOUND_BY), fetched), dtype=np.int64, count=len(fetched))
    if slim:
        full = np.flatnonzero(found_by != _CITIZEN).tolist()
        where.update(zip(map(found_ids.__getitem__, full), full, strict=True))
    ids = list(where)
    at = dict(zip(ids, range(len(ids)), strict=True))
    distinct = [fetched[n] for n in where.values()]
    columns = list(zip(*distinct, strict=True)) if distinct else [()] * (_SHINGLES + 1)
    counts, pair_b = _pairs_of(
        wanted,
        by_column,
        fetched,
        np.fromiter(map(at.__getitem__, found_ids), np.int64, len(fetched)),
        found_by,
    )
    judged = _judge_pairs(
        appeals,
        counts,
        pair_b,
        Stored(
            ticket_ids=ids,
            received_at=columns[_RECEIVED_AT],
            citizens=columns[_KEY_AT],
            grids=columns[_KEY_AT + 1],
            addresses=columns[_KEY_AT + 2],
            repeat_counts=columns[9],
            # The stored shingles come with each candidate's row: one statement (one trip) a
            # look-up, whether the candidates are this process's tickets or another's.
            packed=[data or b"" for data in columns[_SHINGLES]],
        ),
        policy,
        grams,
    )
    earlier: dict[int, Earlier] = {}
    # More candidates than the cache holds (a batch file's thousands) would only turn it over,
    # evicting the ready ones of the posts that follow: those are made and kept nowhere.
    kept = cache if len(ids) <= cache.max_ready else None

    # A slim row's Earlier is kept too, without its place: in a look-up that reads slim rows no
    # Earlier's place is read (a pair a place decides was found through that place's key, and
    # the pass placed it; ``decide`` reads a first match's time, id and links), and a loader's
    # policy, so its look-ups' kind, is fixed (a test holds the verdicts equal, look-up after
    # look-up on one cache each).
    def made(n: int) -> Earlier:
        e = earlier.get(n)
        if e is None:
            e = earlier[n] = _earlier(ids[n], distinct[n], kept)
        return e

    return hand_over(appeals, judged, made)


def _pairs_of(
    wanted: Sequence[tuple[Key, ...]],
    by_column: dict[str, set[str]],
    fetched: Sequence[Sequence[Any]],
    found: np.ndarray,
    found_by: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each appeal's stored candidates as pairs: how many each appeal has (``counts``) and,
    appeal after appeal, their indices (``found[row]`` is the candidate of fetched row ``row``):
    for each of its keys in turn, the rows that key found in the statement's order, a candidate
    found by an earlier key left out — the lists ``dict.fromkeys`` of the keys' rows would give,
    made in numpy: each row's key numbered (its column's value looked up, column by column), the
    rows ordered by key (stably: a key's rows keep their order), each appeal's keys' rows cut
    out of that order, and a pair seen before dropped."""
    codes: list[dict[str, int]] = []  # each column's values numbered, one count for all
    for column in _KEY_COLUMNS:
        values = by_column.get(column, ())
        start = sum(map(len, codes))
        codes.append(dict(zip(values, range(start, start + len(values)), strict=True)))
    n_keys, n_rows = sum(map(len, codes)), len(fetched)
    key_of = np.full(n_rows, n_keys, dtype=np.int64)  # a row of no wanted key: none's
    if found_by is None:
        found_by = np.fromiter(map(itemgetter(_FOUND_BY), fetched), dtype=np.int64, count=n_rows)
    for n, numbered in enumerate(codes):
        rows = np.flatnonzero(found_by == n)
        if rows.size:
            found_values = map(itemgetter(_KEY_AT + n), map(fetched.__getitem__, rows.tolist()))
            key_of[rows] = np.fromiter(
                map(numbered.get, found_values, repeat(n_keys)), dtype=np.int64, count=rows.size
            )
    order = np.argsort(key_of, kind="stable")
    key_sizes = np.bincount(key_of, minlength=n_keys + 1)
    key_ends = np.cumsum(key_sizes)
    key_starts = key_ends - key_sizes
    per_appeal = np.fromiter(map(len, wanted), dtype=np.int64, count=len(wanted))
    column_at = {column: n for n, column in enumerate(_KEY_COLUMNS)}
    keys = np.fromiter(
        (codes[column_at[column]][value] for column, value in chain.from_iterable(wanted)),
        dtype=np.int64,
        count=int(per_appeal.sum()),
    )
    lengths = key_ends[keys] - key_starts[keys]
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if ends.size else 0
    if not total:
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(0, dtype=np.int64)
    at = np.arange(total, dtype=np.int64) + np.repeat(key_starts[keys] - ends + lengths, lengths)
    pair_a = np.repeat(np.repeat(np.arange(len(wanted), dtype=np.int64), per_appeal), lengths)
    pair_b = found[order[at]]
    # the first of each (appeal, candidate), in place
    _, first = np.unique(pair_a * (int(found.max()) + 1) + pair_b, return_index=True)
    if first.size < pair_a.size:
        first.sort()
        pair_a, pair_b = pair_a[first], pair_b[first]
    return np.bincount(pair_a, minlength=len(wanted)).astype(np.int64, copy=False), pair_b


def hand_over(
    appeals: Sequence[repeats.Appeal],
    judged: Sequence[Judged],
    made: Callable[[int], Earlier],
) -> list[list[Earlier]]:
    """What ``decide`` is given of each appeal's stored candidates (``made``: candidate ``n``'s
    ``Earlier``, whose shingles ``decide`` does not read): the passed ones with their counts and
    sizes, and the first of the judged matches standing for them all."""
    out: list[list[Earlier]] = []
    for new, each in zip(appeals, judged, strict=True):
        handed = [_compared(made(n), new, common, size) for n, common, size in each.passed]
        if each.matches:
            summary = (each.matches, each.longest, each.reason)
            handed.append(_compared(made(each.first), new, -1, 0, summary))
        out.append(handed)
    return out


(_SET_E_APPEAL, _SET_E_COUNT, _SET_E_AGAINST, _SET_E_COMMON, _SET_E_JUDGED, _SET_E_SIZE) = (
    Earlier.__dict__[name].__set__
    for name in ("appeal", "repeat_count", "against", "common", "judged", "size")
)


def _compared(
    e: Earlier,
    new: repeats.Appeal,
    common: int,
    size: int,
    judged: tuple[int, int, str] | None = None,
) -> Earlier:
    """``e`` as compared with ``new``: the shingles they share and its set's size, or the judged
    matches it leads (the slots set directly, as ``Earlier(e.appeal, e.repeat_count, new,
    common, judged, size)`` would, at less cost)."""
    made = object.__new__(Earlier)
    _SET_E_APPEAL(made, e.appeal)
    _SET_E_COUNT(made, e.repeat_count)
    _SET_E_AGAINST(made, new)
    _SET_E_COMMON(made, common)
    _SET_E_JUDGED(made, judged)
    _SET_E_SIZE(made, size)
    return made


_NO_SHINGLES: frozenset[int] = frozenset()
_NEW = object.__new__
(
    _SET_RECEIVED_AT,
    _SET_TEXT,
    _SET_SHINGLES,
    _SET_TICKET_ID,
    _SET_CITIZEN,
    _SET_GRID,
    _SET_ADDRESS,
    _SET_LONGITUDE,
    _SET_LATITUDE,
    _SET_REPEAT_OF,
) = (
    repeats.Appeal.__dict__[name].__set__
    for name in (
        "received_at",
        "text",
        "shingles",
        "ticket_id",
        "citizen_hash",
        "grid_code",
        "address_key",
        "longitude",
        "latitude",
        "repeat_of",
    )
)


def _plain(appeal: repeats.Appeal, repeat_count: int) -> Earlier:
    """``Earlier(appeal, repeat_count)``, its slots set directly (the frozen dataclass's
    constructor sets each through ``object.__setattr__``)."""
    made = _NEW(Earlier)
    _SET_E_APPEAL(made, appeal)
    _SET_E_COUNT(made, repeat_count)
    _SET_E_AGAINST(made, None)
    _SET_E_COMMON(made, 0)
    _SET_E_JUDGED(made, None)
    _SET_E_SIZE(made, 0)
    return made


def made_appeal(
    received_at: datetime,
    text: str,
    shingles: frozenset[int],
    ticket_id: str | None,
    citizen_hash: str | None,
    grid_code: str | None,
    address_key: str | None,
    longitude: float | None,
    latitude: float | None,
    repeat_of: str | None,
) -> repeats.Appeal:
    """``repeats.Appeal(received_at, text, shingles, …, repeat_of)``, its slots set directly
    (the frozen dataclass's constructor sets each through ``object.__setattr__``)."""
    made = _NEW(repeats.Appeal)
    _SET_RECEIVED_AT(made, received_at)
    _SET_TEXT(made, text)
    _SET_SHINGLES(made, shingles)
    _SET_TICKET_ID(made, ticket_id)
    _SET_CITIZEN(made, citizen_hash)
    _SET_GRID(made, grid_code)
    _SET_ADDRESS(made, address_key)
    _SET_LONGITUDE(made, longitude)
    _SET_LATITUDE(made, latitude)
    _SET_REPEAT_OF(made, repeat_of)
    return made


def _earlier(ticket_id: str, row: Sequence[Any], cache: ShingleCache | None) -> Earlier:
    """A stored candidate as ``decide`` takes it once compared in the group's pass, without its
    shingles: the cache's own, or made from its row (and kept there); without a cache, made
    and kept nowhere. Its appeal's slots are set directly, as ``repeats.Appeal(received_at=…,
    text="", shingles=frozenset(), …)`` would set them, at less cost (a file's rows make one a
    row: 1.9 against 3.0 us)."""
    ready = cache.ready(ticket_id) if cache is not None else None
    if ready is not None:
        return ready
    appeal = made_appeal(
        row[_RECEIVED_AT],
        "",
        _NO_SHINGLES,
        ticket_id,
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
    )
    made = _plain(appeal, row[9])
    if cache is not None:
        cache.keep(made)
    return made


def judged_earlier(appeal: repeats.Appeal, verdict: Verdict) -> Earlier:
    """A new appeal once judged, as the later appeals of its unit see it: ``Earlier(
    repeats.Appeal(…its fields, text="", repeat_of=verdict.repeat_of), verdict.repeat_count)``,
    its appeal's slots set directly (a file's rows make one a row)."""
    made = made_appeal(
        appeal.received_at,
        "",
        appeal.shingles,
        appeal.ticket_id,
        appeal.citizen_hash,
        appeal.grid_code,
        appeal.address_key,
        appeal.longitude,
        appeal.latitude,
        verdict.repeat_of,
    )
    return _plain(made, verdict.repeat_count)


# --- stored candidates compared packed, a group at once ---------------------------------------


def packed_sets(packed: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Packed shingle sets (``pack_shingles``) as one uint32 array, set ``n`` at
    ``[bounds[n], bounds[n + 1])``, each sorted and unique as ``pack_shingles`` stores them (a
    set stored otherwise is made so: its values are what ``unpack_shingles`` gives)."""
    lengths = np.fromiter(map(len, packed), dtype=np.int64, count=len(packed))
    if (lengths % 4).any():
        raise ValueError("packed shingles are not a whole number of uint32 values")
    bounds = np.zeros(len(packed) + 1, dtype=np.int64)
    np.cumsum(lengths // 4, out=bounds[1:])
    values = np.frombuffer(b"".join(packed), dtype="<u4").astype(np.uint32, copy=False)
    if values.size < 2:
        return values, bounds
    rising = values[1:] > values[:-1]
    inner = bounds[1:-1]
    rising[inner[(inner > 0) & (inner < values.size)] - 1] = True  # one set's last, next's first
    if rising.all():
        return values, bounds
    parts = [values[bounds[n] : bounds[n + 1]] for n in range(len(packed))]
    bad = np.unique(np.searchsorted(bounds, np.flatnonzero(~rising) + 1, side="right") - 1)
    for n in bad.tolist():
        parts[n] = np.unique(parts[n])
    sizes = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    bounds = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    return np.concatenate(parts).astype(np.uint32, copy=False), bounds


def common_counts(
    a_values: np.ndarray,
    a_bounds: np.ndarray,
    b_values: np.ndarray,
    b_bounds: np.ndarray,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
) -> np.ndarray:
    """``|A[pair_a[k]] ∩ B[pair_b[k]]|`` for every pair ``k``, in one numpy pass: sets as in
    ``packed_sets`` (each A unique, in any order; each B sorted and unique). Each pair's A values
    are looked up, keyed by the pair's B, in the sorted (B, value) keys of the B sets the pairs
    name (a group's look-up reads every stored candidate's set, but compares few of them: the
    others match by the citizen alone or fail the size bound)."""
    pairs = pair_a.size
    if not pairs or not b_values.size:
        return np.zeros(pairs, dtype=np.int64)
    used = np.unique(pair_b)
    if used.size < b_bounds.size - 1:  # the named sets alone, in their order, renumbered
        b_sizes = np.diff(b_bounds)[used]
        b_ends = np.cumsum(b_sizes)
        b_at = np.arange(int(b_ends[-1]), dtype=np.int64) + np.repeat(
            b_bounds[:-1][used] - (b_ends - b_sizes), b_sizes
        )
        b_values, b_bounds = b_values[b_at], np.r_[np.int64(0), b_ends]
        pair_b = np.searchsorted(used, pair_b)
        if not b_values.size:
            return np.zeros(pairs, dtype=np.int64)
    a_sizes = np.diff(a_bounds)[pair_a]
    ends = np.cumsum(a_sizes)
    total = int(ends[-1])
    if not total:
        return np.zeros(pairs, dtype=np.int64)
    starts = ends - a_sizes
    at = np.arange(total, dtype=np.int64) + np.repeat(a_bounds[:-1][pair_a] - starts, a_sizes)
    owner = np.repeat(np.arange(b_bounds.size - 1, dtype=np.uint64), np.diff(b_bounds))
    keys = (owner << np.uint64(32)) | b_values.astype(np.uint64)
    wanted = (np.repeat(pair_b.astype(np.uint64), a_sizes) << np.uint64(32)) | a_values[at].astype(
        np.uint64
    )
    place = np.searchsorted(keys, wanted)
    np.minimum(place, keys.size - 1, out=place)
    hits = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(keys[place] == wanted, out=hits[1:])
    return hits[ends] - hits[starts]


@dataclass(frozen=True, slots=True)
class Stored:
    """A group's distinct stored candidates, column by column (index ``n`` is one ticket)."""

    ticket_ids: Sequence[str]
    received_at: Sequence[datetime]
    citizens: Sequence[str | None]
    grids: Sequence[str | None]
    addresses: Sequence[str | None]
    repeat_counts: Sequence[int]
    packed: Sequence[bytes]


@dataclass(slots=True)
class Judged:
    """One appeal's stored candidates after the group's pass: ``passed`` ones for ``decide`` to
    judge, each with the shingles it shares with the appeal (-1 where not counted) and the size
    of its own set, and the
    ones the pass judged matches, summed up as their first (``first``, an index), how many
    (``matches``), the longest chain among them (``longest``) and the first's ``reason``."""

    passed: list[tuple[int, int, int]]
    first: int = -1
    matches: int = 0
    longest: int = 0
    reason: str = ""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moments: Iterable[datetime], count: int) -> np.ndarray:
    """Aware datetimes as whole microseconds since the epoch (exact, so compared as they are)."""
    return np.fromiter(((m - _EPOCH) // _MICROSECOND for m in moments), np.int64, count)


def _codes(
    values: Iterable[str | None], codes: dict[str, int], count: int, *, add: bool
) -> np.ndarray:
    """Each value's code in ``codes`` (added when ``add``); an empty or missing value is -1 when
    added, -2 when looked up, so two such never compare equal."""
    if add:
        found = (codes.setdefault(v, len(codes)) if v else -1 for v in values)
    else:
        found = (codes.get(v, -2) if v else -2 for v in values)
    return np.fromiter(found, dtype=np.int64, count=count)


def _order(stored: Stored, which: list[int]) -> np.ndarray:
    """The rank of each of ``which`` by (received_at, ticket_id), ``decide``'s order of matches.

    Sorted on their POSIX timestamps: a float keeps a microsecond apart for any date before
    the year 2100 or so (2^52 of 10^-6 s is ~142 years), so its order is the datetimes'."""
    times = np.fromiter(
        map(datetime.timestamp, map(stored.received_at.__getitem__, which)),
        dtype=np.float64,
        count=len(which),
    )
    ids = np.array(list(map(stored.ticket_ids.__getitem__, which)), dtype=str)
    rank = np.empty(len(which), dtype=np.int64)
    rank[np.lexsort((ids, times))] = np.arange(len(which))
    return rank


def _same(
    appeals: Sequence[repeats.Appeal],
    name: str,
    values: Sequence[str | None],
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    where: np.ndarray,
) -> np.ndarray:
    """Whether an appeal's ``name`` is set and equal to its stored candidate's, for the pairs
    ``where`` says (False elsewhere); the stored values read for those pairs only."""
    out = np.zeros(pair_a.size, dtype=bool)
    if not where.any():
        return out
    codes: dict[str, int] = {}
    mine = _codes((getattr(a, name) for a in appeals), codes, len(appeals), add=True)
    read = np.unique(pair_b[where])
    theirs = np.full(len(values), -2, dtype=np.int64)
    theirs[read] = _codes((values[k] for k in read.tolist()), codes, read.size, add=False)
    out[where] = mine[pair_a[where]] == theirs[pair_b[where]]
    return out


def _by_text(
    appeals: Sequence[repeats.Appeal],
    stored: Stored,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    same: np.ndarray,
    valid: np.ndarray,
    policy: repeats.RepeatPolicy,
    grams: Sequence[bytes] | None = None,
) -> tuple[np.ndarray, ...]:
    """``judge_stored``'s text and place: for each pair, matched by the same citizen alone,
    matched by the citizen's similarity, matched at all, passed on to ``decide``, its count
    of shared grams (-1 where not counted) and the size of the stored set."""
    pairs, n_appeals = pair_a.size, len(appeals)
    threshold, citizen_min = policy.text_similarity, policy.citizen_min_similarity
    b_values, b_bounds = packed_sets(stored.packed)
    size = np.fromiter((len(a.shingles) for a in appeals), dtype=np.int64, count=n_appeals)
    mine, other = size[pair_a], np.diff(b_bounds)[pair_b]
    small, big = np.minimum(mine, other), np.maximum(mine, other)
    valid = valid & (same | ((big > 0) & (small >= threshold * big)))  # decide's size bound
    by_citizen = valid & same & (citizen_min <= 0)
    compared = np.flatnonzero(valid & ~by_citizen & (small > 0))
    common = np.full(pairs, -1, dtype=np.int64)
    similarity = np.zeros(pairs, dtype=np.float64)  # 0 where a set is empty, as in decide
    if grams is not None and compared.size:
        # A stored set stored as the very bytes of the appeal's (the same text again, the
        # commonest repeat) shares all its grams: its pair needs no count.
        even = compared[mine[compared] == other[compared]]
        if even.size:
            packed = stored.packed
            twins = even[
                np.fromiter(
                    map(
                        eq,
                        map(grams.__getitem__, pair_a[even].tolist()),
                        map(packed.__getitem__, pair_b[even].tolist()),
                    ),
                    dtype=bool,
                    count=even.size,
                )
            ]
            if twins.size:
                common[twins] = mine[twins]
                similarity[twins] = 1.0
                compared = np.setdiff1d(compared, twins, assume_unique=True)
    if compared.size:
        read = np.unique(pair_a[compared])
        a_bounds = np.zeros(n_appeals + 1, dtype=np.int64)
        a_bounds[read + 1] = size[read]
        np.cumsum(a_bounds, out=a_bounds)
        if grams is not None:  # the group's packed grams: one join, no set walked
            a_values = np.frombuffer(
                b"".join([grams[n] for n in read.tolist()]), dtype="<u4"
            ).astype(np.uint32, copy=False)
        else:
            a_values = np.fromiter(
                chain.from_iterable(appeals[n].shingles for n in read.tolist()),
                dtype=np.uint32,
                count=int(a_bounds[-1]),
            )
        shared = common_counts(
            a_values, a_bounds, b_values, b_bounds, pair_a[compared], pair_b[compared]
        )
        common[compared] = shared
        similarity[compared] = shared / (mine[compared] + other[compared] - shared)
    rest = valid & ~by_citizen
    citizen_text = rest & same & (similarity >= citizen_min)
    similar = rest & ~citizen_text & (similarity >= threshold)
    placed = similar & (
        _same(appeals, "grid_code", stored.grids, pair_a, pair_b, similar)
        | _same(appeals, "address_key", stored.addresses, pair_a, pair_b, similar)
    )  # same_place's first two tests, as it makes them
    matched = by_citizen | citizen_text | placed
    passed = similar & ~placed
    return by_citizen, citizen_text, matched, passed, common, other


def judge_stored(
    appeals: Sequence[repeats.Appeal],
    candidates: Sequence[Sequence[int]],
    stored: Stored,
    policy: repeats.RepeatPolicy,
    grams: Sequence[bytes] | None = None,
) -> list[Judged]:
    """``decide``'s judgement of each appeal's stored candidates (indices into ``stored``), for
    the whole group in numpy, pair by pair as ``decide`` does it: the window, the ticket's own
    id, the same citizen, the size bound, the Jaccard (counted on the packed sets in one pass,
    ``common_counts``) against each threshold, and the place where the grid or the address is
    the same. Matches so decided are summed up; pairs whose place needs ``same_place`` (a
    similar text found through the citizen, elsewhere) are passed on with their count; the
    rest cannot match. ``decide`` over the summary and the passed is ``decide`` over all.
    ``grams``: each appeal's shingles packed as ``pack_shingles`` packs them (its set's values,
    sorted), read at once rather than from each set."""
    pairs = sum(map(len, candidates))
    if not pairs:
        return [Judged([]) for _ in candidates]
    if pairs <= PLAIN_PAIRS:
        return _judge_plain(appeals, candidates, stored, policy, grams)
    counts = np.fromiter(map(len, candidates), dtype=np.int64, count=len(candidates))
    pair_b = np.fromiter(chain.from_iterable(candidates), dtype=np.int64, count=pairs)
    return _judge_pairs(appeals, counts, pair_b, stored, policy, grams)


def _judge_pairs(
    appeals: Sequence[repeats.Appeal],
    counts: np.ndarray,
    pair_b: np.ndarray,
    stored: Stored,
    policy: repeats.RepeatPolicy,
    grams: Sequence[bytes] | None = None,
) -> list[Judged]:
    """``judge_stored`` of the candidates given as pairs: ``counts[n]`` of them for appeal
    ``n``, appeal after appeal, their indices in ``pair_b``."""
    pairs = pair_b.size
    if pairs <= PLAIN_PAIRS:
        if not pairs:
            return [Judged([]) for _ in appeals]
        listed = np.split(pair_b, np.cumsum(counts)[:-1])
        return _judge_plain(appeals, [each.tolist() for each in listed], stored, policy, grams)
    n_appeals, n_stored = len(appeals), len(stored.ticket_ids)
    pair_a = np.repeat(np.arange(n_appeals, dtype=np.int64), counts)
    citizens = {a.citizen_hash for a in appeals if a.citizen_hash}
    codes: dict[str, int] = {}
    if citizens.isdisjoint(stored.citizens):
        same = np.zeros(pairs, dtype=bool)
    else:
        same = _codes((a.citizen_hash for a in appeals), codes, n_appeals, add=True)[pair_a]
        same = same == _codes(stored.citizens, codes, n_stored, add=False)[pair_b]
    valid = np.ones(pairs, dtype=bool)
    known = set(stored.ticket_ids)
    if any(a.ticket_id in known for a in appeals):  # an appeal's own ticket, never its repeat
        codes.clear()
        own = _codes((a.ticket_id for a in appeals), codes, n_appeals, add=True)[pair_a]
        valid &= own != _codes(stored.ticket_ids, codes, n_stored, add=False)[pair_b]
    times = [a.received_at for a in appeals]
    if not (max(times) - policy.window <= min(stored.received_at)) or not (
        max(stored.received_at) <= min(times)
    ):  # some stored ticket outside some appeal's window: each pair's window, as decide has it
        until = _micros(times, n_appeals)[pair_a]
        at = _micros(stored.received_at, n_stored)[pair_b]
        valid &= (at <= until) & (at >= until - policy.window // _MICROSECOND)
    if policy.citizen_min_similarity <= 0 and same.all():
        # the appeals' own citizens' tickets only (a citizen calling again): whatever the text
        matched, passed = valid, np.zeros(pairs, dtype=bool)
        by_citizen, citizen_text, common = valid, passed, np.full(pairs, -1, dtype=np.int64)
        sizes = common
    else:
        by_citizen, citizen_text, matched, passed, common, sizes = _by_text(
            appeals, stored, pair_a, pair_b, same, valid, policy, grams
        )
    out = [Judged([]) for _ in appeals]
    if passed.any():
        for n, b, c, k in zip(
            pair_a[passed].tolist(),
            pair_b[passed].tolist(),
            common[passed].tolist(),
            sizes[passed].tolist(),
            strict=True,
        ):
            out[n].passed.append((b, c, k))
    hits = np.flatnonzero(matched)
    if hits.size:
        involved = np.unique(pair_b[hits])
        rank = np.zeros(n_stored, dtype=np.int64)
        rank[involved] = _order(stored, involved.tolist())
        hits = hits[np.lexsort((rank[pair_b[hits]], pair_a[hits]))]
        who = pair_a[hits]
        firsts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
        many = np.diff(np.r_[firsts, who.size])
        chains = np.asarray(stored.repeat_counts, dtype=np.int64)[pair_b[hits]] + 1
        longest = np.maximum.reduceat(chains, firsts)
        why = np.where(by_citizen[hits[firsts]] | citizen_text[hits[firsts]], 0, 1)
        reasons = ("same_citizen", "same_place_similar_text")
        for n, first, m, chain_of, r in zip(
            who[firsts].tolist(),
            pair_b[hits[firsts]].tolist(),
            many.tolist(),
            longest.tolist(),
            why.tolist(),
            strict=True,
        ):
            judged = out[n]
            judged.first, judged.matches, judged.longest = first, m, chain_of
            judged.reason = reasons[r]
    return out


PLAIN_PAIRS = 96
"""Up to this many (appeal, stored candidate) pairs, ``judge_stored`` judges them in plain
Python: numpy's fixed cost per call (~20 calls a group, whatever its size) is more than that
many pairs cost one by one (process CPU, 5 candidates an appeal, appeals of one citizen or of
others: plain Python 23 against 51 us at 40 pairs, 48-155 against 62-230 us at 80, about even
at 120)."""


def _judge_plain(
    appeals: Sequence[repeats.Appeal],
    candidates: Sequence[Sequence[int]],
    stored: Stored,
    policy: repeats.RepeatPolicy,
    grams: Sequence[bytes] | None = None,
) -> list[Judged]:
    """``judge_stored``'s numpy pass pair by pair, each test as it makes it (the same results,
    errors included): for a few pairs, where numpy's per-call cost is most of the time.

    From ``BUCKETED_FROM`` pairs on, each pair's shared grams are first bounded by its sets'
    counts of values in each of ``_BUCKETS`` buckets (``_most_shared``, one numpy pass for
    the group), and a pair the bound keeps below the similarity it needs is not read."""
    threshold, citizen_min = policy.text_similarity, policy.citizen_min_similarity
    citizens = stored.citizens

    def same_key(mine: str | None, theirs: str | None) -> bool:
        return bool(mine) and bool(theirs) and mine == theirs

    by_citizen_alone = citizen_min <= 0 and all(
        a.citizen_hash and all(a.citizen_hash == citizens[b] for b in listed)
        for a, listed in zip(appeals, candidates, strict=True)
        if listed
    )
    sizes: list[int] = []
    uses: Counter[int] = Counter()
    most: list[int] | None = None
    if not by_citizen_alone:
        # every stored set's size as unpacked (a set cut short refused, as packed_sets does for
        # the numpy pass): the size bound is tested before any set is read
        values, bounds = packed_sets(stored.packed)
        set_sizes = np.diff(bounds)
        sizes = set_sizes.tolist()
        uses.update(chain.from_iterable(candidates))
        if sum(map(len, candidates)) >= BUCKETED_FROM:
            most = _most_shared(appeals, candidates, values, set_sizes, grams)
    sets: dict[int, frozenset[int]] = {}

    def shared(mine: frozenset[int], b: int, theirs: int, least: float) -> int:
        """How many grams ``mine`` shares with stored set ``b`` (of ``theirs`` distinct grams):
        its packed values looked up in ``mine`` as they are (~6 against ~16 us for a set of
        ~170 unpacked, then intersected), or, for a candidate of several appeals of the group,
        its set unpacked once; -1 when its first values already show that the similarity
        cannot reach ``least`` (every value after them shared would not make it)."""
        if uses[b] < _UNPACKED_FROM:
            data = stored.packed[b]
            stored_count = len(data) // 4
            ours = len(mine)
            # the least count of shared grams that reaches ``least``, roughly: the values read
            # first are about twice the misses it allows (a few more), so a pair far below is
            # refused after them and a pair near it is counted whole
            need = least * (ours + theirs) / (1 + least)
            head = int(_HEAD_TIMES * (stored_count - need)) + _HEAD_EXTRA
            if 0 < head < stored_count:
                first = _stored_head(data, head)
                if first is not None:
                    # at most every value not read is shared, and no more than either set holds
                    upper = min(len(mine.intersection(first)) + stored_count - head, ours, theirs)
                    if upper / (ours + theirs - upper) < least:
                        return -1
            return len(mine.intersection(_stored_values(data)))
        found = sets.get(b)
        if found is None:
            found = sets[b] = unpack_shingles(stored.packed[b])
        return len(mine & found)

    ranks: dict[int, tuple[float, str, int]] = {}

    def rank(hit: tuple[int, bool]) -> tuple[float, str, int]:
        b = hit[0]
        found = ranks.get(b)
        if found is None:
            found = ranks[b] = _rank_key(stored, b)
        return found

    out = [Judged([]) for _ in candidates]
    caps = iter(most) if most is not None else repeat(-1)
    for a, listed, judged in zip(appeals, candidates, out, strict=True):
        until, own = a.received_at, a.ticket_id
        since = until - policy.window
        hits: list[tuple[int, bool]] = []  # (candidate, matched through the citizen)
        for b, cap in zip(listed, caps, strict=False):  # caps: all pairs, one iterator
            at = stored.received_at[b]
            if (own and own == stored.ticket_ids[b]) or not (since <= at <= until):
                continue
            same = same_key(a.citizen_hash, citizens[b])
            if by_citizen_alone or (same and citizen_min <= 0):
                hits.append((b, True))
                continue
            mine, theirs = a.shingles, sizes[b]
            small, big = sorted((len(mine), theirs))
            if not (same or (big > 0 and small >= threshold * big)):
                continue  # decide's size bound
            common, similarity = -1, 0.0
            if small > 0:
                least = min(threshold, citizen_min) if same else threshold
                if cap >= 0:  # at most the buckets' shared counts (and either set's size)
                    top = min(cap, small)
                    if top / (len(mine) + theirs - top) < least:
                        continue  # cannot reach the similarity a match needs
                common = shared(mine, b, theirs, least)
                if common < 0:
                    continue  # cannot reach the similarity a match needs
                similarity = common / (len(mine) + theirs - common)
            if same and similarity >= citizen_min:
                hits.append((b, True))
            elif similarity >= threshold:
                if same_key(a.grid_code, stored.grids[b]) or same_key(
                    a.address_key, stored.addresses[b]
                ):
                    hits.append((b, False))
                else:
                    judged.passed.append((b, common, theirs))
        if hits:
            hits.sort(key=rank)  # stable, as the lexsort
            first, through_citizen = hits[0]
            judged.first, judged.matches = first, len(hits)
            judged.longest = max(stored.repeat_counts[b] + 1 for b, _ in hits)
            judged.reason = "same_citizen" if through_citizen else "same_place_similar_text"
    return out


_UNPACKED_FROM = 3
"""A stored set judged against this many appeals of a group is unpacked into a set once (~16
us, then ~1 us a pair) rather than its packed values looked up for each (~6 us a pair)."""

_NATIVE_UINT32 = sys.byteorder == "little" and array("I").itemsize == 4


def _stored_values(data: bytes) -> Iterable[int]:
    """A packed set's values (``pack_shingles``) as stored, made into no set: a view of the
    bytes where the machine's ``I`` is a little-endian uint32, else unpacked."""
    return memoryview(data).cast("I") if _NATIVE_UINT32 else unpack_shingles(data)


BUCKETED_FROM = 12
"""From this many pairs a group's plain judgement bounds each pair by its sets' bucket counts
first: a fixed ~35 us a group of numpy calls, against ~4-6 us a pair read (even at ~8-10
pairs; the whole suite's groups of ~12 appeals have ~40)."""

_BUCKETS = 256


def _most_shared(
    appeals: Sequence[repeats.Appeal],
    candidates: Sequence[Sequence[int]],
    values: np.ndarray,
    set_sizes: np.ndarray,
    grams: Sequence[bytes] | None,
) -> list[int]:
    """For each pair, appeal after appeal, at most how many grams it shares: each set's values
    counted in ``_BUCKETS`` buckets by their low bits, and the pair's lesser count summed over
    the buckets (two sets share no more of a bucket's values than the fewer they hold of it).
    ``values``/``set_sizes``: the stored sets as ``packed_sets`` gives them (each unique);
    ``grams``: the appeals' sets packed, if at hand (else read from their shingles)."""
    n_appeals = len(appeals)
    theirs = _bucket_counts(values, set_sizes)
    if grams is not None:
        mine_values = np.frombuffer(b"".join(grams), dtype="<u4")
        mine_sizes = np.fromiter(map(len, grams), dtype=np.int64, count=n_appeals) // 4
    else:
        mine_sizes = np.fromiter((len(a.shingles) for a in appeals), np.int64, n_appeals)
        mine_values = np.fromiter(
            chain.from_iterable(a.shingles for a in appeals), np.uint32, int(mine_sizes.sum())
        )
    mine = _bucket_counts(mine_values, mine_sizes)
    counts = np.fromiter(map(len, candidates), dtype=np.int64, count=len(candidates))
    pair_a = np.repeat(np.arange(len(candidates), dtype=np.int64), counts)
    pair_b = np.fromiter(chain.from_iterable(candidates), np.int64, int(counts.sum()))
    return np.minimum(mine[pair_a], theirs[pair_b]).sum(axis=1).tolist()


def _bucket_counts(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Sets laid end to end (``values``, each set's length in ``sizes``): each set's count of
    values in each of ``_BUCKETS`` buckets by their low bits, a row a set."""
    n = sizes.size
    owner = np.repeat(np.arange(n, dtype=np.int64), sizes)
    low = values & np.uint32(_BUCKETS - 1)
    return np.bincount(owner * _BUCKETS + low, minlength=n * _BUCKETS).reshape(n, _BUCKETS)


_HEAD_TIMES, _HEAD_EXTRA = 2, 16
"""Values of a stored set read past twice the misses a match allows before the rest is judged
needed (``_judge_plain``'s ``shared``)."""


def _stored_head(data: bytes, count: int) -> Iterable[int] | None:
    """The first ``count`` values of a packed set as stored (a view of its bytes), or None
    where the machine's ``I`` is not a little-endian uint32 (the set is then read whole)."""
    return memoryview(data)[: 4 * count].cast("I") if _NATIVE_UINT32 else None


def _rank_key(stored: Stored, b: int) -> tuple[float, str, int]:
    """``_order``'s key of stored candidate ``b``: its POSIX time, then its id as a numpy
    string compares (trailing NULs dropped), then its index (the lexsort's tie)."""
    return stored.received_at[b].timestamp(), stored.ticket_ids[b].rstrip("\x00"), b


class CandidateLoader:
    """Loads the earlier appeals of a whole group of new ones (the pipeline's group of units),
    keeping the shingles of recent tickets in memory and its connections between groups
    (``close`` at the service's stop)."""

    def __init__(self, engine: AsyncEngine, *, policy: repeats.RepeatPolicy, per_key: int) -> None:
        self.connections = LookupConnections(engine)
        self.policy = policy
        self._per_key = per_key
        self.lookups = 0
        self.shingles = ShingleCache()

    async def load(
        self, appeals: Sequence[repeats.Appeal], grams: Sequence[bytes] | None = None
    ) -> list[list[Earlier]]:
        """For each appeal, its candidate earlier tickets (one look-up for them all);
        ``grams``: each appeal's shingles packed, if at hand."""
        if not any(lookup_keys(a) for a in appeals):
            return [[] for _ in appeals]
        self.lookups += 1
        return await load_earlier(
            self.connections,
            appeals,
            policy=self.policy,
            per_key=self._per_key,
            cache=self.shingles,
            grams=grams,
        )

    async def close(self) -> None:
        """Return the look-ups' kept connections to the pool."""
        await self.connections.close()


def policy_from(
    *, window_days: int, text_similarity: float, place_radius_m: float
) -> repeats.RepeatPolicy:
    """The repeat policy the settings describe."""
    return repeats.RepeatPolicy(
        window=timedelta(days=window_days),
        text_similarity=text_similarity,
        place_radius_m=place_radius_m,
    )
