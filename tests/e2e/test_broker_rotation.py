"""The supervisor's rules on a real tansu: backoff with a cap, and planned broker rotations on a
memory threshold or a schedule (a fresh, empty broker on the same port, with a new cluster id)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fengqiao.supervisor import Supervisor, backoff_delay
from shared.broker import EmbeddedBroker, wait_for_port
from shared.rotation import read_handover
from shared.settings import BusSettings, SupervisorSettings


def test_backoff_doubles_per_crash_in_a_row_up_to_the_cap() -> None:
    settings = SupervisorSettings(restart_backoff_s=0.5, restart_backoff_max_s=4)
    assert [backoff_delay(settings, n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff_delay(settings, 10_000) == 4


def _rotations(sup: Supervisor, reason: str) -> float:
    return float(sup.metrics.rotations.labels(reason)._value.get())


def _supervised_broker(tmp_path: Path, **settings: float) -> tuple[Supervisor, EmbeddedBroker]:
    sup = Supervisor(
        settings=SupervisorSettings(sample_interval_s=0.01, **settings), run_dir=tmp_path / "run"
    )
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    sup.add_broker(broker, BusSettings(kafka_bootstrap_servers=broker.bootstrap))
    return sup, broker


def test_a_broker_past_its_memory_threshold_is_rotated_on_its_port(tmp_path: Path) -> None:
    sup, broker = _supervised_broker(
        tmp_path, broker_rotate_rss_mb=1, broker_rotate_min_gap_s=0, broker_rotate_every_hours=0
    )
    try:
        first = broker.cluster_id
        sup.tick(time.monotonic() + 1)  # any tansu holds more than 1 MB
        assert _rotations(sup, "memory") == 1 and _rotations(sup, "schedule") == 0
        assert broker.cluster_id != first
        wait_for_port(broker.host, broker.port)
        assert int((tmp_path / "run" / "broker.pid").read_text()) == broker.process.pid
        # A rotation is planned, not a crash: no restart is counted.
        assert sup.metrics.restarts.labels("broker")._value.get() == 0
    finally:
        sup.stop()


def test_memory_rotations_keep_their_minimum_gap(tmp_path: Path) -> None:
    sup, _ = _supervised_broker(
        tmp_path, broker_rotate_rss_mb=1, broker_rotate_min_gap_s=3600, broker_rotate_every_hours=0
    )
    try:
        sup.tick(time.monotonic() + 1)
        assert _rotations(sup, "memory") == 0
    finally:
        sup.stop()


def test_a_broker_older_than_its_schedule_is_rotated(tmp_path: Path) -> None:
    sup, broker = _supervised_broker(tmp_path, broker_rotate_rss_mb=0, broker_rotate_every_hours=1)
    try:
        first = broker.cluster_id
        sup.tick(time.monotonic() + 60)
        assert _rotations(sup, "schedule") == 0
        sup.tick(time.monotonic() + 3601)
        assert _rotations(sup, "schedule") == 1 and broker.cluster_id != first
    finally:
        sup.stop()


def test_a_rotation_tells_the_new_broker_where_the_consumers_had_read_to(tmp_path: Path) -> None:
    """No group has read anything, and nothing was published: everything before the moment the
    old broker was asked was read. The new broker holds that for the relays, under the old
    broker's id; the old one is stopped without waiting for its clients."""
    sup, broker = _supervised_broker(tmp_path, broker_rotate_rss_mb=0, broker_rotate_every_hours=0)
    try:
        first = broker.cluster_id
        before = time.time()
        sup.rotate_broker("memory")
        took = time.time() - before
        bus = BusSettings(kafka_bootstrap_servers=broker.bootstrap)
        handover = asyncio.run(read_handover(bus, first, wait=2))
        assert handover is not None and handover.previous == first
        assert before <= handover.unread_since <= before + took
        assert asyncio.run(read_handover(bus, broker.cluster_id, wait=0.2)) is None
    finally:
        sup.stop()
