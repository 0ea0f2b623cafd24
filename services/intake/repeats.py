"""Repeat-appeal detection (重复件), as pure functions.

A new appeal repeats an earlier one received within the window (default 30 days) when

* the same citizen made it (same identity hash; optionally also requiring some text similarity),
  or
* it is about the same place (same grid, same address, or coordinates within a radius) **and**
  its text is near-identical (Jaccard similarity of character shingles at or above a threshold).

The decision links the new appeal to the *first* ticket of the chain (``repeat_of``) and counts
the earlier appeals it repeats (``repeat_count``). The service fetches candidates with
``candidate_query`` (one indexed query on citizen hash, grid and address key within the window)
and passes them here; ``simhash64`` is offered for a cheap index on text when candidates are many.

Shingles stay hand-written: rapidfuzz scores edit distance, not this Jaccard (other repeats, and it
needs the earlier text rather than the stored shingles); datasketch's MinHash only estimates the
Jaccard, at ~15 times the cost per appeal (~170 µs against ~11 µs).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from services.intake.nfkc import nfkc

Reason = Literal["same_citizen", "same_place_similar_text"]

_BOILERPLATE = re.compile(
    r"来电人反映|来电人称|来电人咨询|来电反映|市民反映|市民来电|来电人|诉求[:：]|"
    r"请相关部门|请有关部门|希望尽快处理|请尽快处理|请求处理"
)
# Runs of word characters other than ``_``: joined, they are the text with every ``[\W_]``
# removed (each character is one or the other), at less cost than ``sub`` of those characters.
_TEXT_RUNS = re.compile(r"[^\W_]+", re.UNICODE)
# One character that is not a word character, or is ``_``: what the compared text drops.
_NOT_TEXT = re.compile(r"[\W_]", re.UNICODE)
# Distinct such characters removed by ``str.replace`` before the rest go by ``_TEXT_RUNS``.
_DROPS_BY_REPLACE = 8
_ADMIN_PREFIX = re.compile(r"^(?:[\u4e00-\u9fff]{2,7}?(?:省|自治区))?(?:[\u4e00-\u9fff]{2,5}?市)?")
_EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True, slots=True)
class RepeatPolicy:
    """How repeats are recognized; every threshold is configurable."""

    window: timedelta = timedelta(days=30)
    text_similarity: float = 0.6
    shingle_size: int = 3
    place_radius_m: float = 100.0
    min_address_overlap: int = 6
    citizen_min_similarity: float = 0.0


@dataclass(frozen=True, slots=True)
class Appeal:
    """What repeat detection needs to know about one appeal (new or earlier)."""

    received_at: datetime
    text: str
    shingles: frozenset[int]
    ticket_id: str | None = None
    citizen_hash: str | None = None
    grid_code: str | None = None
    address_key: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    repeat_of: str | None = None


@dataclass(frozen=True, slots=True)
class RepeatMatch:
    """One earlier appeal the new one repeats, why, and how similar the texts are."""

    ticket_id: str
    received_at: datetime
    reason: Reason
    similarity: float


@dataclass(frozen=True, slots=True)
class RepeatDecision:
    """``repeat_of`` (the chain's first ticket) and how many earlier appeals were matched."""

    repeat_of: str | None = None
    repeat_count: int = 0
    matches: tuple[RepeatMatch, ...] = field(default_factory=tuple)

    @property
    def is_repeat(self) -> bool:
        """Whether any earlier appeal matched."""
        return self.repeat_of is not None


@dataclass(frozen=True, slots=True)
class CandidateQuery:
    """Which earlier tickets to load: any of these keys, received in ``[since, until]``."""

    since: datetime
    until: datetime
    citizen_hash: str | None
    grid_code: str | None
    address_key: str | None
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat


# --- normalization ---------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Text for comparison: NFKC, lower case, operator boilerplate and punctuation removed."""
    folded = nfkc(text).lower()
    return _text_only(_BOILERPLATE.sub("", folded))


def _text_only(text: str) -> str:
    """``"".join(_TEXT_RUNS.findall(text))``: the text less every ``[\\W_]`` character.

    A text holds few distinct such characters (an appeal's commas and full stops) many times
    over: each found is removed everywhere by one ``str.replace``, and the search goes on from
    where it was found (nothing before it is one). A text of many distinct ones goes the
    ``findall`` way for the rest after the first few, so no text costs a replace per character.
    About half the cost of the ``findall`` of every run and their join (a test holds the two
    equal)."""
    found = _NOT_TEXT.search(text)
    replaced = 0
    while found is not None:
        if replaced == _DROPS_BY_REPLACE:
            return "".join(_TEXT_RUNS.findall(text))
        at = found.start()
        text = text.replace(found.group(), "")
        replaced += 1
        found = _NOT_TEXT.search(text, at)
    return text


def text_of(title: str, content: str) -> str:
    """The text an appeal is compared by: its title and content, normalized."""
    return normalize_text(f"{title}{content}")


def normalize_address(address: str | None) -> str | None:
    """An address key: NFKC, no spaces or punctuation, province/city prefix dropped."""
    if not address:
        return None
    compact = _text_only(nfkc(address).lower())
    key = _ADMIN_PREFIX.sub("", compact, count=1)
    return key or compact or None


def shingles(text: str, size: int = 3) -> frozenset[int]:
    """The set of hashed character ``size``-grams of already normalized text."""
    if not text:
        return frozenset()
    if len(text) <= size:
        return frozenset({zlib.crc32(text.encode())})
    return frozenset(zlib.crc32(text[i : i + size].encode()) for i in range(len(text) - size + 1))


def _crc_step(register: np.ndarray, data: np.ndarray | int) -> np.ndarray:
    """One byte through zlib's CRC-32 register (reflected polynomial 0xEDB88320)."""
    return (register >> 8) ^ _CRC_TABLE[(register ^ data) & 0xFF]


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()
_MAX_GRAM_BYTES = 4 * 8  # grams up to 8 characters take the vectorised path


def _zero_tables() -> np.ndarray:
    """``[k, i, b]``: the register ``b << 8i`` after ``k`` zero bytes (the register is linear in
    its bits, so a register after ``k`` zero bytes is the XOR of its four bytes' entries)."""
    tables = np.zeros((_MAX_GRAM_BYTES + 1, 4, 256), dtype=np.uint32)
    for i in range(4):
        register = np.arange(256, dtype=np.uint32) << np.uint32(8 * i)
        for k in range(_MAX_GRAM_BYTES + 1):
            tables[k, i] = register
            register = _crc_step(register, 0)
    return tables


def _bmp_registers() -> np.ndarray:
    """The register after each BMP character's UTF-8 bytes, starting from 0."""
    encoded, count = _utf8_bytes(np.arange(0x10000, dtype=np.uint32))
    return _char_registers(encoded, count)


def _utf8_bytes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each code point's UTF-8 bytes (4 rows, unused ones 0) and how many it has."""
    lead = np.where(
        points < 0x80,
        points,
        np.where(
            points < 0x800,
            0xC0 | (points >> 6),
            np.where(points < 0x10000, 0xE0 | (points >> 12), 0xF0 | (points >> 18)),
        ),
    )
    count = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    tail = [0x80 | ((points >> shift) & 0x3F) for shift in (12, 6, 0)]
    second = np.where(count == 2, tail[2], np.where(count == 3, tail[1], tail[0]))
    third = np.where(count == 3, tail[2], tail[1])
    encoded = np.stack([lead, second, third, tail[2]]).astype(np.uint32)
    return encoded, count.astype(np.int64)


def _char_registers(encoded: np.ndarray, count: np.ndarray) -> np.ndarray:
    register = np.zeros(count.size, dtype=np.uint32)
    for k in range(4):
        register = np.where(count > k, _crc_step(register, encoded[k]), register)
    return register


_ZERO_TABLES = _zero_tables()
_BMP_REGISTERS = _bmp_registers()
_ZERO_FLAT = _ZERO_TABLES.ravel()
# zlib.crc32 of n bytes = (the register of the bytes from 0) ^ _FINAL[n]: the initial all-ones
# register carried through n bytes, and the final inversion.
_FINAL = np.bitwise_xor.reduce(_ZERO_TABLES[:, :, 0xFF], axis=1) ^ np.uint32(0xFFFFFFFF)


class _CarriedRegisters:
    """``[k * 0x10000 + c]``: BMP character ``c``'s register carried through ``k`` zero bytes,
    one table lookup where the four byte tables take four. Rows are filled on first use, up to
    the most bytes a gram has after a character (at most 7 rows for the usual 3-grams)."""

    def __init__(self) -> None:
        self.flat = np.zeros((_MAX_GRAM_BYTES + 1) * 0x10000, dtype=np.uint32)
        self.rows = 0

    def upto(self, most: int) -> np.ndarray:
        while self.rows <= most:
            k = self.rows
            carried = np.zeros(0x10000, dtype=np.uint32)
            for i in range(4):
                carried ^= _ZERO_TABLES[k, i][(_BMP_REGISTERS >> np.uint32(8 * i)) & 0xFF]
            self.flat[k * 0x10000 : (k + 1) * 0x10000] = carried
            self.rows += 1
        return self.flat


_CARRIED = _CarriedRegisters()


def shingles_many(texts: Sequence[str], size: int = 3) -> list[np.ndarray]:
    """``shingles`` of many texts at once, each as a sorted array of unique uint32 values.

    One numpy pass for them all. CRC-32 is linear: the register after a gram's bytes is the
    XOR of each character's own register (looked up per code point) carried through the zero
    bytes of the characters after it (four table lookups), and the initial register and final
    inversion add a constant that depends on the gram's length in bytes only. The values are
    exactly ``shingles``' (``zlib.crc32`` of each gram's UTF-8), so they compare with stored
    shingles as before.
    """
    out: list[np.ndarray] = [_EMPTY] * len(texts)
    long_ones = [i for i, t in enumerate(texts) if len(t) > size]
    for i, t in enumerate(texts):
        if t and len(t) <= size:
            out[i] = np.array([zlib.crc32(t.encode())], dtype=np.uint32)
    if not long_ones:
        return out
    try:
        points = np.frombuffer(
            "".join(texts[i] for i in long_ones).encode("utf-32-le"), dtype="<u4"
        ).astype(np.int64)
    except UnicodeEncodeError:
        points = None
    if points is None or size > 8:  # a lone surrogate (``shingles`` raises), or huge grams
        for i in long_ones:
            out[i] = np.array(sorted(shingles(texts[i], size)), dtype=np.uint32)
        return out
    lengths = np.array([len(texts[i]) for i in long_ones], dtype=np.int64)
    grams_per_text = lengths - size + 1
    owner = np.repeat(np.arange(len(long_ones), dtype=np.int64), grams_per_text)
    first_gram = np.concatenate(([0], np.cumsum(grams_per_text)[:-1]))
    first_char = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    column = np.arange(owner.size) - first_gram[owner]  # a gram's place in its text
    starts = first_char[owner] + column
    width = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    astral = np.flatnonzero(points >= 0x10000)
    if astral.size:
        registers = _BMP_REGISTERS[np.minimum(points, 0xFFFF)]
        registers[astral] = _char_registers(*_utf8_bytes(points[astral].astype(np.uint32)))
        crc = np.zeros(starts.size, dtype=np.uint32)
        after = np.zeros(starts.size, dtype=np.int64)  # bytes of the gram after this character
        for offset in range(size - 1, -1, -1):
            at = starts + offset
            carried = registers[at].astype(np.int64)
            row = after * 1024  # _ZERO_TABLES[after] flattened: 4 rows of 256 per count
            for i in range(4):
                crc ^= _ZERO_FLAT[row + (256 * i + ((carried >> (8 * i)) & 0xFF))]
            after += width[at]
    else:  # the BMP only (the usual case): a character's carried register in one lookup
        carried_flat = _CARRIED.upto(3 * (size - 1))
        last = starts + (size - 1)
        crc = _BMP_REGISTERS[points[last]]  # nothing after the last character
        after = width[last]
        for offset in range(size - 2, -1, -1):
            at = starts + offset
            crc ^= carried_flat[after * 0x10000 + points[at]]
            after += width[at]
    crc ^= _FINAL[after]
    values, bounds = _sorted_unique(crc, owner, column, grams_per_text)
    for n, i in enumerate(long_ones):
        out[i] = values[bounds[n] : bounds[n + 1]]
    return out


# A grid of texts × their most grams is sorted by rows when it holds at most this many times the
# grams (plus a few thousand cells); else the grams are sorted as one array of (text, value) keys.
_GRID_SLACK = 2
_GRID_EXTRA = 4096


def _sorted_unique(
    crc: np.ndarray, owner: np.ndarray, column: np.ndarray, grams_per_text: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each text's gram values (``crc``, text ``owner``, position ``column`` in it) sorted and
    unique: all texts' values in one array, text ``n``'s at ``[bounds[n], bounds[n + 1])``.

    Sorted as rows of a grid (one row per text, padded with the largest value to the longest
    text's grams): numpy sorts many short rows several times faster than the one long array of
    64-bit (text, value) keys, which is the way taken when the padding would outweigh the grams
    (one long text among short ones). A row's first ``grams_per_text`` values are its own, sorted:
    the padding is the largest value there is, so it sorts after them or equals them."""
    texts, most = grams_per_text.size, int(grams_per_text.max())
    if texts * most <= _GRID_SLACK * crc.size + _GRID_EXTRA:
        grid = np.full((texts, most), 0xFFFFFFFF, dtype=np.uint32)
        grid[owner, column] = crc
        grid.sort(axis=1)
        keep = np.arange(most) < grams_per_text[:, None]
        keep[:, 1:] &= grid[:, 1:] != grid[:, :-1]
        bounds = np.zeros(texts + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=bounds[1:])
        return grid[keep], bounds
    keys = (owner.astype(np.uint64) << np.uint64(32)) | crc.astype(np.uint64)
    keys.sort()
    unique = np.empty(keys.size, dtype=bool)
    unique[0] = True
    np.not_equal(keys[1:], keys[:-1], out=unique[1:])
    keys = keys[unique]
    values = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return values, np.searchsorted(keys >> np.uint64(32), np.arange(texts + 1), side="left")


_EMPTY = np.zeros(0, dtype=np.uint32)


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    """|A ∩ B| / |A ∪ B| (0 for two empty sets)."""
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def simhash64(features: Iterable[int]) -> int:
    """A 64-bit SimHash of hashed features: near-identical texts differ in few bits."""
    weights = [0] * 64
    for feature in features:
        digest = zlib.crc32(feature.to_bytes(8, "little", signed=False)) | (
            zlib.crc32(feature.to_bytes(8, "big", signed=False)) << 32
        )
        for bit in range(64):
            weights[bit] += 1 if digest >> bit & 1 else -1
    return sum(1 << bit for bit in range(64) if weights[bit] > 0)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two SimHashes."""
    return (a ^ b).bit_count()


def appeal(
    *,
    received_at: datetime,
    title: str,
    content: str,
    ticket_id: str | None = None,
    citizen_hash: str | None = None,
    grid_code: str | None = None,
    address: str | None = None,
    longitude: float | None = None,
    latitude: float | None = None,
    repeat_of: str | None = None,
    policy: RepeatPolicy | None = None,
    text_shingles: tuple[str, frozenset[int]] | None = None,
) -> Appeal:
    """Build an ``Appeal`` from a ticket's fields (normalizing text and address).

    ``text_shingles``: the normalized text and its shingles when already computed for many
    appeals at once (``text_of`` and ``shingles_many``)."""
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    if text_shingles is None:
        text = text_of(title, content)
        grams = shingles(text, (policy or RepeatPolicy()).shingle_size)
    else:
        text, grams = text_shingles
    return Appeal(
        received_at=received_at,
        text=text,
        shingles=grams,
        ticket_id=ticket_id,
        citizen_hash=citizen_hash,
        grid_code=grid_code or None,
        address_key=normalize_address(address),
        longitude=longitude,
        latitude=latitude,
        repeat_of=repeat_of,
    )


# --- matching --------------------------------------------------------------------------------


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def same_place(a: Appeal, b: Appeal, policy: RepeatPolicy) -> bool:
    """Same grid, the same address (or one inside the other), or points within the radius."""
    if a.grid_code and a.grid_code == b.grid_code:
        return True
    if a.address_key and b.address_key:
        shorter, longer = sorted((a.address_key, b.address_key), key=len)
        if shorter == longer or (len(shorter) >= policy.min_address_overlap and shorter in longer):
            return True
    if None not in (a.longitude, a.latitude, b.longitude, b.latitude):
        meters = distance_m(a.longitude, a.latitude, b.longitude, b.latitude)  # type: ignore[arg-type]
        return meters <= policy.place_radius_m
    return False


def in_window(new: Appeal, earlier: Appeal, policy: RepeatPolicy) -> bool:
    """``earlier`` was received no later than ``new`` and within the window before it."""
    return new.received_at - policy.window <= earlier.received_at <= new.received_at


def match(new: Appeal, earlier: Appeal, policy: RepeatPolicy) -> RepeatMatch | None:
    """Why ``new`` repeats ``earlier``, or ``None`` if it does not."""
    if earlier.ticket_id is None or earlier.ticket_id == new.ticket_id:
        return None
    if not in_window(new, earlier, policy):
        return None
    similarity = jaccard(new.shingles, earlier.shingles)
    if (
        new.citizen_hash
        and new.citizen_hash == earlier.citizen_hash
        and similarity >= policy.citizen_min_similarity
    ):
        return RepeatMatch(earlier.ticket_id, earlier.received_at, "same_citizen", similarity)
    if similarity >= policy.text_similarity and same_place(new, earlier, policy):
        reason: Reason = "same_place_similar_text"
        return RepeatMatch(earlier.ticket_id, earlier.received_at, reason, similarity)
    return None


def find_repeats(
    new: Appeal, candidates: Iterable[Appeal], policy: RepeatPolicy | None = None
) -> RepeatDecision:
    """Decide whether ``new`` repeats any candidate; link it to the first ticket of the chain."""
    policy = policy or RepeatPolicy()
    found: list[tuple[RepeatMatch, Appeal]] = []
    for candidate in candidates:
        hit = match(new, candidate, policy)
        if hit is not None:
            found.append((hit, candidate))
    if not found:
        return RepeatDecision()
    found.sort(key=lambda pair: (pair[0].received_at, pair[0].ticket_id))
    first_match, first = found[0]
    return RepeatDecision(
        repeat_of=first.repeat_of or first_match.ticket_id,
        repeat_count=len(found),
        matches=tuple(hit for hit, _ in found),
    )


def candidate_query(new: Appeal, policy: RepeatPolicy | None = None) -> CandidateQuery:
    """What to load to judge ``new``: any of its keys, or a point in its box, within the window.

    Address containment cannot be an index lookup; the service may add a prefix/LIKE match on
    the address key when its store supports it.
    """
    policy = policy or RepeatPolicy()
    bbox = None
    if new.longitude is not None and new.latitude is not None:
        dlat = math.degrees(policy.place_radius_m / _EARTH_RADIUS_M)
        dlon = dlat / max(math.cos(math.radians(new.latitude)), 1e-6)
        lon, lat = new.longitude, new.latitude
        bbox = (lon - dlon, lat - dlat, lon + dlon, lat + dlat)
    return CandidateQuery(
        since=new.received_at - policy.window,
        until=new.received_at,
        citizen_hash=new.citizen_hash,
        grid_code=new.grid_code,
        address_key=new.address_key,
        bbox=bbox,
    )
