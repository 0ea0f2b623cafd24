"""A planned rotation's handover against the real broker: where the consumer groups had read to
(``unread_since``), written to the new broker and read back by a relay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.broker import EmbeddedBroker, free_port
from shared.bus import consumer_group_id, create_topics, topic_name
from shared.events import DISPATCH_TOPIC, INTAKE_TOPIC
from shared.rotation import Handover, leave_handover, read_handover, unread_since
from shared.settings import ServiceSettings
from tests.support import bus_settings

# The services of this test and what they read: dispatch intake's tickets, evaluation both.
READERS = {"dispatch": (INTAKE_TOPIC,), "evaluation": (INTAKE_TOPIC, DISPATCH_TOPIC)}


@pytest.fixture
async def settings(broker: EmbeddedBroker, prefix: str) -> ServiceSettings:
    made = ServiceSettings(**bus_settings(broker.bootstrap, prefix))
    await create_topics(made)
    return made


async def publish(settings: ServiceSettings, logical: str, count: int) -> list[float]:
    """``count`` records on partition 0 of a topic, one send each (each its own time): their
    publication times as the broker gives them back, in offset order."""
    topic = topic_name(settings, logical)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, f"{logical}-{n}".encode(), partition=0)
            await asyncio.sleep(0.002)  # distinct milliseconds
    finally:
        await producer.stop()
    return await times_of(settings, logical, count)


async def times_of(settings: ServiceSettings, logical: str, count: int) -> list[float]:
    tp = TopicPartition(topic_name(settings, logical), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found: list[float] = []
        while len(found) < count:
            for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                found += [r.timestamp / 1000 for r in records]
        return found
    finally:
        await consumer.stop()


async def commit(
    settings: ServiceSettings, cluster_id: str, service: str, read: Mapping[str, int]
) -> None:
    """Commit, as ``service``'s group on that broker, offset ``read[topic]`` on partition 0."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=consumer_group_id(settings, service, cluster_id),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = {TopicPartition(topic_name(settings, t), 0): offset for t, offset in read.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


async def test_the_earliest_record_a_group_had_not_read_bounds_what_was_unread(
    settings: ServiceSettings, broker: EmbeddedBroker
) -> None:
    tickets = await publish(settings, INTAKE_TOPIC, 10)
    dispatches = await publish(settings, DISPATCH_TOPIC, 3)
    cluster = broker.cluster_id
    await commit(settings, cluster, "dispatch", {INTAKE_TOPIC: 10})
    await commit(settings, cluster, "evaluation", {INTAKE_TOPIC: 4, DISPATCH_TOPIC: 3})
    # Evaluation read four tickets of ten: the fifth is the first it had not.
    assert await unread_since(settings, cluster, READERS) == tickets[4]
    # Every group read everything: the moment of asking (anything published later is later).
    await commit(settings, cluster, "evaluation", {INTAKE_TOPIC: 10})
    before = time.time()
    asked = await unread_since(settings, cluster, READERS)
    assert asked is not None and before <= asked <= time.time()
    assert asked > dispatches[-1]


async def test_a_group_that_committed_nothing_on_a_topic_had_read_none_of_it(
    settings: ServiceSettings, broker: EmbeddedBroker
) -> None:
    await publish(settings, INTAKE_TOPIC, 2)
    dispatches = await publish(settings, DISPATCH_TOPIC, 2)
    cluster = broker.cluster_id
    await commit(settings, cluster, "dispatch", {INTAKE_TOPIC: 2})
    await commit(settings, cluster, "evaluation", {INTAKE_TOPIC: 2})
    # Evaluation reads dispatch's topic too, and committed nothing there.
    assert await unread_since(settings, cluster, READERS) == dispatches[0]
    # Another broker's groups are not this one's: nothing committed at all on it.
    tickets = await times_of(settings, INTAKE_TOPIC, 2)
    assert await unread_since(settings, "another-broker", READERS) == tickets[0]


async def test_a_broker_that_does_not_answer_cannot_say(prefix: str) -> None:
    settings = ServiceSettings(**bus_settings(f"127.0.0.1:{free_port()}", prefix))
    started = time.monotonic()
    assert await unread_since(settings, "gone", READERS, timeout=1.0) is None
    assert time.monotonic() - started < 3


async def test_a_handover_is_read_back_for_the_broker_it_left_only(
    settings: ServiceSettings,
) -> None:
    handover = Handover("the-old-broker", 1_796_000_000.25)
    # Asked before the supervisor wrote any: none, after the wait.
    started = time.monotonic()
    assert await read_handover(settings, "the-old-broker", wait=0.3) is None
    assert time.monotonic() - started >= 0.3
    await leave_handover(settings, handover)
    assert await read_handover(settings, "the-old-broker") == handover
    assert await read_handover(settings, "some-other-broker", wait=0.3) is None
    assert Handover.decode(handover.encode()) == handover
    assert Handover.decode(b"{not json") is None
