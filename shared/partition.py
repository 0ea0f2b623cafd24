"""Kafka's default partition for a whole batch of keys at once.

aiokafka's ``DefaultPartitioner`` hashes each key with the Java client's murmur2 (seed
``0x9747b28c``), clears the sign bit and takes it modulo the number of partitions; a key of
``None`` goes to a random available partition (any partition when none is available). Its murmur2
is pure Python, one key at a time, and was most of what the outbox relay's ``send()`` cost a
record. Here the same arithmetic runs over every key of a batch at once: numpy's ``uint32``
operations wrap modulo 2**32 exactly as the masked Python integers do, keys of one length form a
matrix whose columns are their 4-byte words, and the loop runs once per word position instead of
once per word of every key. Every key gets exactly the partition aiokafka gives it (a property test
holds the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from aiokafka.partitioner import DefaultPartitioner, murmur2

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)
_U32 = np.dtype("<u4")
# Below this many keys numpy's fixed cost per operation exceeds aiokafka's own loop.
_VECTOR_FROM = 8

_default = DefaultPartitioner()


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """The Java client's murmur2 of every key, as unsigned 32-bit ints (aiokafka's ``murmur2``)."""
    if len(keys) < _VECTOR_FROM:
        return [murmur2(key) for key in keys]
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    if len(by_length) == 1:
        ((length, _),) = by_length.items()
        return _same_length(b"".join(keys), len(keys), length).tolist()  # type: ignore[no-any-return]
    hashes = [0] * len(keys)
    for length, positions in by_length.items():
        block = _same_length(b"".join(keys[i] for i in positions), len(positions), length)
        for i, h in zip(positions, block.tolist(), strict=True):
            hashes[i] = h
    return hashes


def _same_length(data: bytes, count: int, length: int) -> np.ndarray:
    """murmur2 of ``count`` keys of ``length`` bytes each, laid end to end in ``data``."""
    h = np.full(count, (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    if length == 0:
        return _finish(h)
    rows = np.frombuffer(data, dtype=np.uint8).reshape(count, length)
    words = length // 4
    if words:
        # The words little-endian, as Java reads them; the product is a new, writable array.
        k = np.ascontiguousarray(rows[:, : words * 4]).view(_U32) * _M
        k ^= k >> np.uint32(24)
        k *= _M
        for i in range(words):
            h *= _M
            h ^= k[:, i]
    tail = rows[:, words * 4 :].astype(np.uint32)
    extra = length % 4
    if extra >= 3:
        h ^= tail[:, 2] << np.uint32(16)
    if extra >= 2:
        h ^= tail[:, 1] << np.uint32(8)
    if extra >= 1:
        h ^= tail[:, 0]
        h *= _M
    return _finish(h)


def _finish(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def partitions_for_keys(
    keys: Sequence[bytes | None], all_partitions: Sequence[int], available: Sequence[int]
) -> list[int]:
    """The partition aiokafka's ``DefaultPartitioner`` picks for each key, given what it is
    given (``all_partitions`` in the order the producer lists them, ``available`` for keys of
    ``None``)."""
    if not all_partitions:
        raise ValueError("a topic without partitions")
    every, ready = list(all_partitions), list(available)
    hashed = [i for i, key in enumerate(keys) if key is not None]
    if len(hashed) < _VECTOR_FROM:
        return [_default(key, every, ready) for key in keys]
    whole = len(hashed) == len(keys)
    values = murmur2_many(keys if whole else [keys[i] for i in hashed])  # type: ignore[arg-type,misc]
    indices = (np.array(values, dtype=np.uint32) & np.uint32(0x7FFFFFFF)) % np.uint32(len(every))
    picked: list[int] = np.asarray(every)[indices].tolist()
    if whole:
        return picked
    chosen = [_default(None, every, ready) if key is None else 0 for key in keys]
    for i, partition in zip(hashed, picked, strict=True):
        chosen[i] = partition
    return chosen
