"""A batch's partitions computed at once are exactly those aiokafka's own partitioner picks."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.partition import murmur2_many, partitions_for_keys

aiokafka_partitioner = DefaultPartitioner()

# Keys of many lengths, and long runs of keys of one length (ticket ids are all 16 bytes), in
# batches both below and above the size from which the vectorized path is taken.
mixed_keys = st.lists(st.binary(max_size=40), max_size=120)
same_length_keys = st.integers(min_value=0, max_value=40).flatmap(
    lambda n: st.lists(st.binary(min_size=n, max_size=n), min_size=1, max_size=120)
)
counts = st.integers(min_value=1, max_value=2000)


@settings(max_examples=300, deadline=None)
@given(keys=st.one_of(mixed_keys, same_length_keys))
def test_murmur2_of_a_batch_is_aiokafka_s_murmur2_of_each_key(keys: list[bytes]) -> None:
    assert murmur2_many(keys) == [murmur2(key) for key in keys]


@settings(max_examples=300, deadline=None)
@given(keys=st.one_of(mixed_keys, same_length_keys), count=counts, data=st.data())
def test_every_key_gets_the_partition_aiokafka_gives_it(
    keys: list[bytes], count: int, data: st.DataObject
) -> None:
    # The partitioner indexes the producer's list of partitions: any order it comes in.
    every = data.draw(st.permutations(range(count)))
    available = every[: data.draw(st.integers(0, count))]
    expected = [aiokafka_partitioner(key, every, available) for key in keys]
    assert partitions_for_keys(keys, every, available) == expected


def test_keys_that_fill_32_bits_and_the_sign_bit_match_too() -> None:
    """Keys whose hash has the top bit set (cleared before the modulo, as Java does)."""
    keys = [bytes([b]) * n for b in (0x00, 0x7F, 0x80, 0xFF) for n in range(0, 24)]
    assert any(murmur2(k) & 0x80000000 for k in keys)
    for count in (1, 2, 3, 6, 7, 1000):
        every = list(range(count))
        assert partitions_for_keys(keys, every, every) == [
            aiokafka_partitioner(k, every, every) for k in keys
        ]


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(st.one_of(st.none(), st.binary(max_size=24)), max_size=60),
    count=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_a_key_of_none_goes_where_aiokafka_may_send_it(
    keys: list[bytes | None], count: int, data: st.DataObject
) -> None:
    """aiokafka picks at random among the available partitions, among all when none is: the
    same choice here; keyed records in the same batch still get their own partitions."""
    every = list(range(count))
    available = data.draw(st.lists(st.sampled_from(every), unique=True))
    chosen = partitions_for_keys(keys, every, available)
    assert len(chosen) == len(keys)
    for key, partition in zip(keys, chosen, strict=True):
        if key is None:
            assert partition in (available or every)
        else:
            assert partition == aiokafka_partitioner(key, every, available)


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="without partitions"):
        partitions_for_keys([b"k"], [], [])
