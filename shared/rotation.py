"""A planned rotation of the embedded broker hands over where its consumers had read to.

A new broker is empty, so each relay replays its retained outbox rows onto it; replaying every
row within ``OUTBOX_RETENTION_DAYS`` made every rotation re-send days of events (the daily
scheduled rotation of a city's embedded suite re-sent a week's), and while the replay ran no
new event went out: received → dispatched waited tens of seconds under load. Only what some
consumer group had not read yet needs to reach the new broker: everything below every group's
committed offset was applied and committed in the consumer's own database first.

So before the supervisor stops the old broker it asks it (``unread_since``): for every
partition of every topic the suite's services consume, the lowest offset any of their groups
has committed (no commit: the partition's first record), and the publication time of the
record there; the earliest of those — or, when every group has read everything, the moment of
asking — is a time before which every record was read by every group. Records published after
the question have a later time, so the bound holds while the relays keep publishing. The
supervisor writes it to the new broker (``leave_handover``) before the services could have
read anything there, and each relay, when it adopts the new broker, replays only the rows it
published from that time on (``OutboxRelay.adopt_broker``). A broker that crashed, a probe that
failed or a handover missing replays in full as before.

Records carry the time their relay sent them (the producer's clock); the relay compares the
handover with its own send times, on the same clock. The dead-letter topic is nobody's input:
its records are an operator's copy of what every inbox keeps with its reason
(``GET /admin/dead-letters``); the new broker holds those published since the handover time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.bus import consumer_group_id, make_admin, topic_name
from shared.settings import BusSettings

log = logging.getLogger(__name__)

# The topic a rotation's handover is written to on the new broker (``<prefix>.bus.handovers``).
HANDOVER_TOPIC = "bus.handovers"


@dataclass(frozen=True)
class Handover:
    """What a planned rotation tells the relays on the new broker: every record the old broker
    ``previous`` held that some consumer group had not read was published at or after
    ``unread_since`` (seconds since the epoch, the producers' clock)."""

    previous: str
    unread_since: float

    def encode(self) -> bytes:
        return json.dumps({"previous": self.previous, "unread_since": self.unread_since}).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> Handover | None:
        try:
            data = json.loads(value or b"")
            return cls(str(data["previous"]), float(data["unread_since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def __str__(self) -> str:
        moment = datetime.fromtimestamp(self.unread_since, UTC).isoformat(timespec="milliseconds")
        return f"unread since {moment} on {self.previous}"


async def unread_since(
    settings: BusSettings,
    cluster_id: str,
    consumers: Mapping[str, Sequence[str]],
    *,
    timeout: float = 5.0,
) -> float | None:
    """The time (epoch seconds) before which every record on broker ``cluster_id`` was read by
    every consumer group of ``consumers`` (service → the logical topics it consumes); None when
    the broker cannot tell within ``timeout`` — the caller replays everything then."""
    try:
        async with asyncio.timeout(timeout):
            return await _unread_since(settings, cluster_id, consumers)
    except Exception as exc:  # any failure means "cannot tell": the relays replay everything
        log.warning("reading the consumers' positions on %s: %r", cluster_id, exc)
        return None


async def _unread_since(
    settings: BusSettings, cluster_id: str, consumers: Mapping[str, Sequence[str]]
) -> float | None:
    asked = time.time()  # before the positions are read: anything published later is later
    admin = make_admin(settings, client_id="fengqiao-rotation")
    await admin.start()
    try:
        wanted = sorted({topic_name(settings, t) for topics in consumers.values() for t in topics})
        partitions: dict[str, list[TopicPartition]] = {}
        for described in await admin.describe_topics(wanted):
            if described["error_code"] != 0:
                continue  # never created: nothing on it to read
            partitions[described["topic"]] = [
                TopicPartition(described["topic"], p["partition"]) for p in described["partitions"]
            ]
        # Each partition from the lowest position any group that reads it has committed there.
        start: dict[TopicPartition, int] = {}
        for service, logical in consumers.items():
            mine = [tp for t in logical for tp in partitions.get(topic_name(settings, t), [])]
            if not mine:
                continue
            group = consumer_group_id(settings, service, cluster_id)
            committed = await admin.list_consumer_group_offsets(group, partitions=mine)
            for tp in mine:
                found = committed.get(tp)
                offset = found.offset if found is not None and found.offset >= 0 else 0
                start[tp] = min(start.get(tp, offset), offset)
    finally:
        await admin.close()
    earliest = await _first_times(settings, start)
    if earliest is None:
        return None
    return min(earliest, asked)


async def _first_times(settings: BusSettings, start: Mapping[TopicPartition, int]) -> float | None:
    """The earliest publication time of the records at ``start`` (each partition's first unread
    one); ``inf`` when no partition holds one there. A partition counts as read to its end only
    when a fetch came back from it empty twice — an answer, not a time-out."""
    if not start:
        return float("inf")
    probe = _reader(settings, "fengqiao-rotation")
    await probe.start()
    try:
        probe.assign(list(start))
        for tp, offset in start.items():
            probe.seek(tp, offset)
        earliest = float("inf")
        undecided = set(start)
        empty: dict[TopicPartition, int] = {}
        while undecided:
            fetched = await probe.getmany(*undecided, timeout_ms=200)
            for tp in list(undecided):
                records = fetched.get(tp)
                if records:
                    earliest = min(earliest, records[0].timestamp / 1000)
                    undecided.discard(tp)
                elif probe.highwater(tp) is not None:  # a fetch of it was answered
                    empty[tp] = empty.get(tp, 0) + 1
                    if empty[tp] >= 2:
                        undecided.discard(tp)
        return earliest
    finally:
        await probe.stop()


def _reader(settings: BusSettings, client_id: str) -> AIOKafkaConsumer:
    """A consumer of no group that commits nothing, its empty fetches answered within 50 ms."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )


async def leave_handover(settings: BusSettings, handover: Handover) -> None:
    """Write ``handover`` to the (new) broker, on a one-partition topic of its own."""
    topic = topic_name(settings, HANDOVER_TOPIC)
    admin = make_admin(settings, client_id="fengqiao-rotation")
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, 1, settings.kafka_replication_factor)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="fengqiao-rotation",
        acks="all",
        enable_idempotence=False,
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, handover.encode(), key=handover.previous.encode())
    finally:
        await producer.stop()


async def read_handover(
    settings: BusSettings, previous: str, *, wait: float = 3.0
) -> Handover | None:
    """The handover of the rotation away from broker ``previous``, if the broker holds one. The
    supervisor writes it right after the new broker starts, and a relay may ask first: the
    topic and the record are awaited up to ``wait`` seconds (a broker restarted after a crash
    never gets one; a relay that slept through a rotation finds another broker's)."""
    topic = topic_name(settings, HANDOVER_TOPIC)
    consumer = _reader(settings, "fengqiao-handover")
    await consumer.start()
    try:
        deadline = time.monotonic() + wait
        while True:
            known = await consumer.topics()
            parts = consumer.partitions_for_topic(topic) if topic in known else None
            if parts:
                break
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            fetched = await consumer.getmany(*tps, timeout_ms=100)
            for records in fetched.values():
                for record in records:
                    handover = Handover.decode(record.value)
                    if handover is not None and handover.previous == previous:
                        return handover
            if time.monotonic() >= deadline:
                return None
    finally:
        await consumer.stop()
