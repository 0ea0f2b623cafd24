"""A consumer group shares its topics' partitions so that one member holds the same partition
numbers of every topic: all of a ticket's events (keyed by the ticket on every topic) reach one
member. With three partitions a topic and two members, round robin (aiokafka's default) would
give partition 0 of one topic to one member and of the next topic to the other."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from shared.bus import make_admin, make_consumer, start_consumer, topic_name
from shared.settings import BusSettings
from tests.support import bus_settings, wait_until

PARTITIONS = 3
TOPICS = ("first", "second", "third")


async def test_each_member_reads_the_same_partitions_of_every_topic(
    broker: Any, prefix: str
) -> None:
    settings = BusSettings(**bus_settings(broker.bootstrap, prefix))
    names = [topic_name(settings, t) for t in TOPICS]
    await _create(settings, names)
    members = [
        make_consumer(settings, *names, group_id=f"{prefix}-group", client_id=f"member-{n}")
        for n in range(2)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for member in members:
            await member.start()
            stack.push_async_callback(member.stop)
        await wait_until(
            _shared_out(members, names), timeout=30, what="every partition to be assigned"
        )
        held = [member.assignment() for member in members]
    assert all(held), held  # both members hold something
    for partitions in held:
        numbers = [{tp.partition for tp in partitions if tp.topic == name} for name in names]
        assert numbers[0] == numbers[1] == numbers[2], sorted(partitions)


async def _create(settings: BusSettings, names: list[str]) -> None:
    admin = make_admin(settings, client_id="assignment-admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def _shared_out(members: list[AIOKafkaConsumer], names: list[str]) -> Callable[[], Awaitable[bool]]:
    """Whether the members hold every partition once between them (fetching keeps each one's
    heartbeat and its part in the group's rebalances going)."""
    every = {TopicPartition(name, p) for name in names for p in range(PARTITIONS)}

    async def check() -> bool:
        for member in members:
            await member.getmany(timeout_ms=50)
        held = [member.assignment() for member in members]
        return all(held) and sum(len(h) for h in held) == len(every) and set().union(*held) == every

    return check


async def test_a_consumer_that_takes_all_reads_every_partition_from_its_group_s_positions(
    broker: Any, prefix: str
) -> None:
    """``kafka_consumer_takes_all`` (one process a service): no join — every partition of its
    topics at once, each from the group's committed offset (else the first record), and its
    commits are the group's, for the next consumer of that group to start from."""
    settings = BusSettings(**bus_settings(broker.bootstrap, prefix), kafka_consumer_takes_all=True)
    names = [topic_name(settings, t) for t in TOPICS[:2]]
    await _create(settings, names)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for name in names:
            for p in range(PARTITIONS):
                for n in range(3):
                    await producer.send_and_wait(name, f"{p}-{n}".encode(), partition=p)
    finally:
        await producer.stop()
    group = f"{prefix}-alone"
    first = make_consumer(settings, *names, group_id=group, client_id="alone")
    await start_consumer(first, settings, *names)
    try:
        assert first.assignment() == {
            TopicPartition(n, p) for n in names for p in range(PARTITIONS)
        }
        read = await _records(first, 3 * PARTITIONS * len(names))
        assert sorted(r.value for r in read) == sorted(
            f"{p}-{n}".encode() for _ in names for p in range(PARTITIONS) for n in range(3)
        )
        await first.commit({TopicPartition(names[0], 0): 2})
    finally:
        await first.stop()
    again = make_consumer(settings, *names, group_id=group, client_id="alone-again")
    await start_consumer(again, settings, *names)
    beside = make_consumer(settings, *names, group_id=group, client_id="beside")
    await start_consumer(beside, settings, *names)
    try:
        read = await _records(again, 1 + 3 * (PARTITIONS * len(names) - 1))
        # No join: a second consumer of the group takes everything too, nothing is shared out
        # (joined, the two would split the partitions between them).
        await beside.getmany(timeout_ms=200)
        assert (
            again.assignment()
            == beside.assignment()
            == {TopicPartition(n, p) for n in names for p in range(PARTITIONS)}
        )
    finally:
        await beside.stop()
        await again.stop()
    # Only the partition whose position the group committed starts past its first records.
    assert sum(r.topic == names[0] and r.partition == 0 for r in read) == 1


async def _records(consumer: AIOKafkaConsumer, count: int) -> list[Any]:
    read: list[Any] = []
    deadline = time.monotonic() + 20
    while len(read) < count:
        assert time.monotonic() < deadline, (len(read), count)
        for records in (await consumer.getmany(timeout_ms=200)).values():
            read += records
    return read
