"""A consumer's fetch waits for a batch's worth of bytes, never longer than its wait: a lone
record still arrives. (What the larger fetches save is measured by `bench/suite.py`.)"""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer

from services.dispatch.settings import DispatchSettings
from shared.broker import EmbeddedBroker
from shared.bus import make_consumer, topic_name
from shared.settings import ServiceSettings
from tests.support import bus_settings


def test_the_fetch_waits_for_64_kib_unless_a_service_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ServiceSettings().consumer_fetch_min_bytes == 65536
    monkeypatch.setenv("DISPATCH_CONSUMER_FETCH_MIN_BYTES", "1")
    assert DispatchSettings().consumer_fetch_min_bytes == 1
    with pytest.raises(ValueError, match="consumer_fetch_min_bytes"):
        ServiceSettings(consumer_fetch_min_bytes=0)


async def test_a_lone_record_arrives_within_the_wait(broker: EmbeddedBroker, prefix: str) -> None:
    settings = ServiceSettings(
        **bus_settings(broker.bootstrap, prefix), consumer_fetch_max_wait_ms=300
    )
    assert settings.consumer_fetch_min_bytes == 65536
    topic = topic_name(settings, "fetch-min-bytes")
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    consumer = make_consumer(settings, topic, group_id=f"{prefix}.fetch", client_id="fetch")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")  # creates the topic
        await consumer.start()
        seen, deadline = 0, time.monotonic() + 10
        while seen < 1 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            seen += sum(map(len, batches.values()))

        # One record, far below the 64 KiB the fetch waits for: the wait bounds its delay.
        started = time.monotonic()
        await producer.send_and_wait(topic, b"alone")
        got: list[bytes] = []
        while not got and time.monotonic() - started < 10:
            batches = await consumer.getmany(timeout_ms=1000)
            got = [r.value for records in batches.values() for r in records if r.value]
        assert got == [b"alone"], "a record below the fetch's minimum must still be delivered"
        assert time.monotonic() - started < 5
    finally:
        await consumer.stop()
        await producer.stop()
