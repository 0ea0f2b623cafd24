"""``python -m fengqiao.serve``: workers on sockets of their own share new connections, one that
dies is started again, SIGTERM stops them all."""

from __future__ import annotations

import collections
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# An ASGI app answering every request with its worker's process id.
APP = """
import os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_of_answer(port: int) -> int | None:
    """The worker answering a request on a new connection, or None if none answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        return int(conn.getresponse().read())
    except OSError:
        return None
    finally:
        conn.close()


def _wait_for(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "pid_app.py").write_text(APP)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fengqiao.serve", "pid_app:app", "--port", str(port)),
            *("--workers", "2", "--no-access-log", "--log-level", "warning"),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert _wait_for(lambda: _pid_of_answer(port) is not None, 30), "never answered"
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def test_connections_spread_over_both_workers(served) -> None:  # type: ignore[no-untyped-def]
    proc, port = served
    answers = collections.Counter(_pid_of_answer(port) for _ in range(60))
    assert None not in answers
    assert set(answers) == _children(proc.pid)
    # The kernel spreads new connections by their ports: 60 of them leave each of two
    # workers fewer than 10 about once in 10^7 runs.
    assert len(answers) == 2 and min(answers.values()) >= 10, answers


def test_a_dead_worker_is_started_again(served) -> None:  # type: ignore[no-untyped-def]
    proc, port = served
    first = _children(proc.pid)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert _wait_for(lambda: len(_children(proc.pid) - first) == 1, 15)
    replacement = (_children(proc.pid) - first).pop()
    assert _wait_for(lambda: replacement in {_pid_of_answer(port) for _ in range(20)}, 30), (
        "the new worker never answered"
    )


def test_sigterm_stops_every_worker(served) -> None:  # type: ignore[no-untyped-def]
    proc, _port = served
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()
