"""A consumer group shares its topics' partitions so that one member holds the same partition
numbers of every topic: all of a ticket's events (keyed by the ticket on every topic) reach one
member. With three partitions a topic and two members, round robin (aiokafka's default) would
give partition 0 of one topic to one member and of the next topic to the other."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from shared.bus import make_admin, make_consumer, topic_name
from shared.settings import BusSettings
from tests.support import bus_settings, wait_until

PARTITIONS = 3
TOPICS = ("first", "second", "third")


async def test_each_member_reads_the_same_partitions_of_every_topic(
    broker: Any, prefix: str
) -> None:
    settings = BusSettings(**bus_settings(broker.bootstrap, prefix))
    names = [topic_name(settings, t) for t in TOPICS]
    admin = make_admin(settings, client_id="assignment-admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()
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
