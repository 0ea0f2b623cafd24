"""``fengqiao up`` — the command behind ``make run`` — brings the suite up and takes it down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.broker import free_port


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


@pytest.mark.slow
def test_up_serves_a_ticket_end_to_end_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    base = free_port()
    while any(_in_use(base + i) for i in range(4)):
        base = free_port()
    broker_port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("DATABASE_URL") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env["KAFKA_SESSION_TIMEOUT_MS"] = "2000"
    env["KAFKA_HEARTBEAT_INTERVAL_MS"] = "500"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fengqiao.cli",
            "up",
            "--base-port",
            str(base),
            "--broker-port",
            str(broker_port),
            "--var-dir",
            str(tmp_path / "var"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for i in range(4):
            _wait_http(f"http://127.0.0.1:{base + i}/healthz", 60)
        _wait_http(f"http://127.0.0.1:{base + 3}/readyz", 30)
        posted = httpx.post(
            f"http://127.0.0.1:{base}/tickets",
            json={"title": "路灯不亮", "content": "小区门口路灯坏了三天", "category_code": "0102"},
            timeout=5,
        )
        assert posted.status_code == 201, posted.text
        deadline = time.monotonic() + 10
        summary: dict[str, int] = {}
        while time.monotonic() < deadline:
            summary = httpx.get(f"http://127.0.0.1:{base + 3}/summary", timeout=2).json()
            if summary["dispatched"] == 1:
                break
            time.sleep(0.1)
        assert summary.get("received") == 1 and summary.get("dispatched") == 1, summary
        for name in ("intake", "dispatch", "mediation", "evaluation"):
            assert (tmp_path / "var" / f"{name}.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert "stopped." in output
    for port in (*range(base, base + 4), broker_port):
        assert not _in_use(port), f"port {port} still served after shutdown"


def _in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
