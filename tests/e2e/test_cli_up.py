"""``fengqiao up`` — the command behind ``make run`` — brings the suite up and takes it down."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bench.embedded import SERVICE_NAMES, start_suite
from fengqiao.supervisor import EMBEDDED_PARTITIONS


@pytest.mark.slow
def test_up_serves_a_ticket_end_to_end_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    suite = start_suite(
        tmp_path / "var",
        env={"KAFKA_SESSION_TIMEOUT_MS": "2000", "KAFKA_HEARTBEAT_INTERVAL_MS": "500"},
    )
    try:
        posted = httpx.post(
            f"{suite.url('intake')}/tickets",
            json={"title": "路灯不亮", "content": "小区门口路灯坏了三天", "category_code": "0102"},
            timeout=5,
        )
        assert posted.status_code == 201, posted.text
        deadline = time.monotonic() + 10
        summary: dict[str, int] = {}
        while time.monotonic() < deadline:
            summary = httpx.get(f"{suite.url('evaluation')}/summary", timeout=2).json()
            # receipt and assignment travel on different topics: either may be counted first
            if summary["received"] == 1 and summary["dispatched"] == 1:
                break
            time.sleep(0.1)
        assert summary.get("received") == 1 and summary.get("dispatched") == 1, summary
        for name in SERVICE_NAMES:
            assert (tmp_path / "var" / f"{name}.db").exists()
        # No KAFKA_TOPIC_PARTITIONS given: the embedded broker's topics have one partition each.
        partitions = asyncio.run(_partitions(f"127.0.0.1:{suite.broker_port}"))
        assert partitions["fengqiao.intake.tickets"] == EMBEDDED_PARTITIONS, partitions
        assert set(partitions.values()) == {EMBEDDED_PARTITIONS}, partitions
    finally:
        output = suite.stop(timeout=30)
    assert suite.process.returncode == 0, output
    assert "stopped." in output
    ports = [*range(suite.base_port, suite.metrics_port + 1), suite.broker_port]
    for port in ports:
        assert not _in_use(port), f"port {port} still served after shutdown"


async def _partitions(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith("fengqiao.")]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
