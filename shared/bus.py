"""Kafka plumbing: topic names, client factories, topic creation, and the broker-epoch watch.

The broker is a transport that may be wiped (the embedded broker keeps everything in memory).
Each service remembers the cluster id it last published to; when a different one answers, the
broker is new, so the outbox re-publishes what it retains and consumers rejoin from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError

from shared.events import ALL_TOPICS
from shared.partition import partitions_for_keys
from shared.settings import BusSettings

log = logging.getLogger(__name__)

# The largest produce request and so the largest record (aiokafka's default, stated here because
# batches built by hand are checked against it: aiokafka checks only what ``send()`` takes).
MAX_REQUEST_SIZE = 1 << 20

# How a group shares its topics' partitions among its members. Range gives each member the same
# partition numbers of every topic it reads; every topic has ``kafka_topic_partitions``
# partitions and every event is keyed by its ticket, so all of a ticket's events (its receipt on
# intake's topic, its dispatches on dispatch's) reach one member, which applies them in turn.
# Round robin (aiokafka's default) can give intake's partition 0 to one member and dispatch's to
# another: two members would then fold and count one ticket at the same time, each from what it
# read before the other committed. Round robin stays listed second only so that a member of an
# older release, which knows only that, can still join while a group is upgraded: the group
# takes the first strategy every member has.
ASSIGNORS = (RangePartitionAssignor, RoundRobinPartitionAssignor)
# key, value, headers: one record to publish.
Outgoing = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def topic_name(settings: BusSettings, logical: str) -> str:
    """The physical topic for a logical name, e.g. ``fengqiao.intake.tickets``."""
    return f"{settings.kafka_topic_prefix}.{logical}" if settings.kafka_topic_prefix else logical


def make_producer(settings: BusSettings, *, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; idempotence only where the broker has it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        compression_type=(
            None if settings.kafka_compression_type == "none" else settings.kafka_compression_type
        ),
        linger_ms=2,
        max_batch_size=1 << 20,
        max_request_size=MAX_REQUEST_SIZE,
        request_timeout_ms=15000,
    )


async def partition_batches(
    producer: AIOKafkaProducer, topic: str, records: Sequence[Outgoing]
) -> list[tuple[str, int, Any]]:
    """``records`` built into aiokafka batches, one per partition (more where a partition's
    records overflow ``max_batch_size``), each partition's records in the order given: what
    ``send()`` of each record in turn would have queued, partitioned by the same rule (every
    key's partition computed in one pass over the whole set) and nothing sent yet. Raises
    ``MessageSizeTooLargeError``, as ``send()`` would, for a record over the request size."""
    partitions = list(await producer.partitions_for(topic))
    available = producer.client.cluster.available_partitions_for_topic(topic) or ()
    chosen = partitions_for_keys([r[0] for r in records], partitions, list(available))
    grouped: dict[int, list[Outgoing]] = {}
    for record, partition in zip(records, chosen, strict=True):
        group = grouped.get(partition)
        if group is None:
            grouped[partition] = [record]
        else:
            group.append(record)
    # Each partition's first batch ahead of any partition's second: ``send_batch`` of a second
    # waits until its partition's first has left, and would hold up the other partitions.
    rounds: list[list[tuple[str, int, Any]]] = []
    for partition, group in grouped.items():
        batch, made = producer.create_batch(), 0
        for key, value, headers in group:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                _add_to_round(rounds, made, (topic, partition, _within_limit(batch)))
                batch, made = producer.create_batch(), made + 1
                batch.append(key=key, value=value, timestamp=None, headers=headers)  # a first fits
        _add_to_round(rounds, made, (topic, partition, _within_limit(batch)))
    return [batch for batches in rounds for batch in batches]


def _add_to_round(
    rounds: list[list[tuple[str, int, Any]]], index: int, batch: tuple[str, int, Any]
) -> None:
    if index == len(rounds):
        rounds.append([])
    rounds[index].append(batch)


def _within_limit(batch: Any) -> Any:
    # Only a batch's first record may take it past ``max_batch_size``.
    if batch.record_count() == 1 and batch.size() > MAX_REQUEST_SIZE:
        raise MessageSizeTooLargeError(
            f"a record of {batch.size()} bytes is over the {MAX_REQUEST_SIZE}-byte request size"
        )
    return batch


async def send_batches(producer: AIOKafkaProducer, batches: Sequence[tuple[str, int, Any]]) -> None:
    """Queue every batch and wait for the broker's acknowledgement of all of them (one future
    a batch); the first failure is raised once every batch has been answered, so nothing of
    this publication is still in flight when the caller gives up on it."""
    futures: list[asyncio.Future[Any]] = []
    try:
        for topic, partition, batch in batches:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    except BaseException:
        for future in futures:  # their outcome no longer matters: do not log it as unread
            future.add_done_callback(_read_outcome)
        raise
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _read_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def make_consumer(
    settings: BusSettings, *topics: str, group_id: str, client_id: str
) -> AIOKafkaConsumer:
    """A consumer that commits by hand after the database commit and starts at the earliest
    record when its group has no committed offset (tansu reports wrong end offsets); a fetch
    the broker has nothing for returns after ``consumer_fetch_max_wait_ms``. It joins its group
    for ``topics`` — unless ``kafka_consumer_takes_all``: then ``start_consumer`` assigns it
    every partition of them."""
    return AIOKafkaConsumer(
        *(() if settings.kafka_consumer_takes_all else topics),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_records=None,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        fetch_min_bytes=settings.consumer_fetch_min_bytes,
        isolation_level="read_uncommitted",
        partition_assignment_strategy=ASSIGNORS,
    )


async def start_consumer(
    consumer: AIOKafkaConsumer, settings: BusSettings, *topics: str, wait: float = 0.2
) -> None:
    """Start a consumer of ``make_consumer``; with ``kafka_consumer_takes_all``, assign it every
    partition of ``topics`` once the broker knows them all (the relays and the supervisor create
    them; until then it asks again every ``wait`` seconds). Its positions are its group's
    committed offsets, else the earliest record."""
    await consumer.start()
    if not settings.kafka_consumer_takes_all:
        return
    while True:
        known = await consumer.topics()
        found = {t: consumer.partitions_for_topic(t) if t in known else None for t in topics}
        if all(found.values()):
            break
        await asyncio.sleep(wait)
    consumer.assign(
        [TopicPartition(t, p) for t, parts in found.items() for p in sorted(parts or ())]
    )


def make_admin(settings: BusSettings, *, client_id: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        request_timeout_ms=5000,
    )


async def ensure_topics(
    admin: AIOKafkaAdminClient, settings: BusSettings, logical: Iterable[str] = ALL_TOPICS
) -> None:
    """Create the topics that do not exist yet, with the configured partition count."""
    existing = set(await admin.list_topics())
    wanted = [topic_name(settings, name) for name in logical]
    missing = [
        NewTopic(name, settings.kafka_topic_partitions, settings.kafka_replication_factor)
        for name in wanted
        if name not in existing
    ]
    if not missing:
        return
    with contextlib.suppress(TopicAlreadyExistsError):  # another service was quicker
        await admin.create_topics(missing)
    log.info("created topics %s", [t.name for t in missing])


async def create_topics(settings: BusSettings) -> None:
    """One-shot topic creation for the CLI and tests."""
    admin = make_admin(settings, client_id="fengqiao-admin")
    await admin.start()
    try:
        await ensure_topics(admin, settings)
    finally:
        await admin.close()


class BrokerWatch:
    """Tracks which broker incarnation (cluster id) a service is talking to.

    ``epoch`` increases every time the service adopts a new cluster id; consumers compare it
    with the epoch they joined under and rejoin when it moved.
    """

    def __init__(self) -> None:
        self.cluster_id: str | None = None
        self.epoch = 0
        self.reachable = False
        self._changed = asyncio.Event()

    def adopt(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self.epoch += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


def consumer_group_id(settings: BusSettings, service: str, cluster_id: str) -> str:
    """The consumer group of ``service`` on broker incarnation ``cluster_id``.

    The cluster id is part of the name so that offsets committed on one broker never steer a
    consumer on another: after a wipe, a consumer that has not yet noticed the new broker may
    fetch and commit there at its old positions, skipping records the relay re-publishes below
    them. A group per incarnation starts at the earliest record instead; the inbox drops what
    was already applied. Against Apache Kafka the id never changes, so neither does the group.
    """
    return f"{settings.kafka_topic_prefix}.{service}.{cluster_id}"


async def fetch_cluster_id(admin: AIOKafkaAdminClient, *, timeout: float = 3.0) -> str:
    """The cluster id the broker reports; raises on timeout or connection failure."""
    # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation that arrives as the
    # call completes, and the relay that asked would keep running through a shutdown.
    async with asyncio.timeout(timeout):
        info = await admin.describe_cluster()
    return str(info["cluster_id"])
