"""The embedded suite's processes: the four services and the broker as children, their
environment and databases planned and migrated, and a loop that keeps them running.

A crashed process restarts alone, after an exponential backoff with a cap; every restart is
logged with its count and counted in ``fengqiao_supervisor_restarts_total`` on the supervisor's
own metrics endpoint. A crashed broker restarts empty on its port and the services' outboxes
refill it; a planned rotation (memory threshold or schedule) does the same on purpose, so the
broker's memory stays bounded. See docs/architecture.md, "Supervision", for why this is a loop
of our own rather than circus, supervisord or honcho.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from fengqiao import registry
from fengqiao.registry import SERVICES
from shared.broker import EmbeddedBroker
from shared.bus import create_topics
from shared.events import CONSUMES
from shared.rotation import Handover, leave_handover, unread_since
from shared.settings import BusSettings, SupervisorSettings

log = logging.getLogger("fengqiao.supervisor")


# Partitions a topic is created with on the embedded broker when ``KAFKA_TOPIC_PARTITIONS`` is
# not set: one. tansu's memory storage answers every fetch by listing every record batch the
# partition has held since the broker started, and the relays add a batch a partition every
# few hundred milliseconds under load, so the broker's CPU a ticket grows with the minutes a
# surge lasts, in proportion to the partitions each fetch reads (docs/benchmarks.md, "The
# embedded broker over ten minutes"). ``fengqiao up`` runs one process a service, so a
# consumer group has one member, which a second partition gives nothing; and the broker is
# rebuilt empty at every start and rotation, so a deployment that scales a consumer out sets
# the variable and restarts.
EMBEDDED_PARTITIONS = 1


def embedded_defaults(bus: BusSettings) -> dict[str, str]:
    """What ``fengqiao up`` sets for its embedded broker where the environment says nothing:
    one partition a topic (``EMBEDDED_PARTITIONS``), and consumers that read every partition
    themselves rather than join their group (one process a service: nothing to share, and
    no ~3 s join at every start and rotation; ``kafka_consumer_takes_all``)."""
    defaults = {}
    if "kafka_topic_partitions" not in bus.model_fields_set:
        defaults["KAFKA_TOPIC_PARTITIONS"] = str(EMBEDDED_PARTITIONS)
    if "kafka_consumer_takes_all" not in bus.model_fields_set:
        defaults["KAFKA_CONSUMER_TAKES_ALL"] = "true"
    return defaults


def plan_environment(var_dir: Path, bootstrap: str) -> dict[str, str]:
    """Variables the children get: the broker, and a SQLite file each unless one was configured."""
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    for name, service in SERVICES.items():
        settings = service.load_settings()
        if "database_url" not in settings.model_fields_set:
            env[f"{name.upper()}_DATABASE_URL"] = f"sqlite+aiosqlite:///{var_dir / name}.db"
    return env


def migrate_all(env: dict[str, str]) -> None:
    saved = dict(os.environ)
    os.environ.update(env)  # the settings classes read the children's environment
    try:
        for name in SERVICES:
            registry.upgrade(name)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def spawn(
    name: str, host: str, port: int, env: dict[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    """Start one service under uvicorn, its output appended to ``<log_dir>/<name>.log``."""
    log_file = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                SERVICES[name].app,
                "--host",
                host,
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
        )
    finally:
        log_file.close()


def memory_of(pid: int) -> tuple[int, int] | None:
    """Resident and peak resident bytes of a live process (Linux ``/proc``), or None."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    if len(values) < 2:
        return None  # a zombie has no memory lines
    return values["VmRSS"], values["VmHWM"]


def backoff_delay(settings: SupervisorSettings, crashes_in_a_row: int) -> float:
    """Seconds to wait before restarting after the n-th crash in a row (n >= 1)."""
    exponent = min(max(crashes_in_a_row - 1, 0), 30)  # 2**30 s is past any cap
    return float(min(settings.restart_backoff_s * 2**exponent, settings.restart_backoff_max_s))


class SupervisorMetrics:
    """What the supervisor exposes to Prometheus, on its own port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.restarts = Counter(
            "fengqiao_supervisor_restarts",
            "Restarts of a supervised process after it exited unplanned.",
            ["process"],
            registry=r,
        )
        self.rotations = Counter(
            "fengqiao_supervisor_broker_rotations",
            "Planned restarts of the embedded broker, by trigger (memory or schedule).",
            ["reason"],
            registry=r,
        )
        self.up = Gauge(
            "fengqiao_supervisor_process_up", "1 while the process runs.", ["process"], registry=r
        )
        self.pid = Gauge("fengqiao_supervisor_process_pid", "Its PID.", ["process"], registry=r)
        self.rss = Gauge(
            "fengqiao_supervisor_process_rss_bytes",
            "Resident memory at the last sample.",
            ["process"],
            registry=r,
        )
        self.peak_rss = Gauge(
            "fengqiao_supervisor_process_peak_rss_bytes",
            "Highest resident memory of any incarnation of the process since the suite started.",
            ["process"],
            registry=r,
        )


@dataclass
class Supervised:
    """One process the supervisor keeps running."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    port: int | None = None
    stop: Callable[[subprocess.Popen[bytes]], None] | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes_in_a_row: int = 0
    restarts: int = 0
    restart_at: float = 0.0
    peak_rss: int = 0


def terminate(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reaps the process."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Supervisor:
    """Keeps the suite's processes running: ``tick()`` from a loop, ``stop()`` at the end."""

    settings: SupervisorSettings
    run_dir: Path
    metrics: SupervisorMetrics = field(default_factory=SupervisorMetrics)
    processes: list[Supervised] = field(default_factory=list)
    broker: EmbeddedBroker | None = None
    _bus: BusSettings | None = None
    _broker_entry: Supervised | None = None
    _last_sample: float = 0.0
    _last_rotation: float = 0.0

    def add(self, entry: Supervised) -> Supervised:
        """Supervise ``entry``, starting it now unless it already runs."""
        self.processes.append(entry)
        if entry.process is None:
            self._launch(entry, time.monotonic())
        else:
            self._started(entry, time.monotonic())
        return entry

    def add_broker(self, broker: EmbeddedBroker, bus: BusSettings) -> Supervised:
        """Supervise an embedded broker (already started): restarted on its port when it dies,
        rotated when its memory or age passes the configured bounds."""

        def launch() -> subprocess.Popen[bytes]:
            broker.start()
            assert broker.process is not None
            try:
                # The relays create topics when they meet the new cluster id; creating them here
                # as well means no consumer ever subscribes to an auto-created (4-partition) one.
                asyncio.run(create_topics(bus))
            except Exception as exc:
                log.warning("creating topics on the new broker: %s (the relays will)", exc)
            return broker.process

        def stop(_process: subprocess.Popen[bytes]) -> None:
            broker.stop()

        self.broker = broker
        self._bus = bus
        for reason in ("memory", "schedule"):
            self.metrics.rotations.labels(reason)
        assert broker.process is not None
        self._broker_entry = self.add(
            Supervised("broker", launch, port=broker.port, stop=stop, process=broker.process)
        )
        self._last_rotation = time.monotonic()
        return self._broker_entry

    def tick(self, now: float | None = None) -> None:
        """Restart what died (once its backoff has passed), sample memory, rotate the broker."""
        now = time.monotonic() if now is None else now
        for entry in self.processes:
            if entry.process is None:
                if now >= entry.restart_at:
                    self._launch(entry, now)
                continue
            code = entry.process.poll()
            if code is None:
                if (
                    entry.crashes_in_a_row
                    and now - entry.started_at >= self.settings.restart_stable_s
                ):
                    entry.crashes_in_a_row = 0
                continue
            self._crashed(entry, f"exited ({code})", now)
        if now - self._last_sample >= self.settings.sample_interval_s:
            self._last_sample = now
            self.sample()
            self._maybe_rotate(now)

    def _crashed(self, entry: Supervised, how: str, now: float) -> None:
        entry.process = None
        entry.crashes_in_a_row += 1
        delay = backoff_delay(self.settings, entry.crashes_in_a_row)
        entry.restart_at = now + delay
        self.metrics.up.labels(entry.name).set(0)
        log.warning("%s %s; restart #%d in %.1f s", entry.name, how, entry.restarts + 1, delay)

    def _launch(self, entry: Supervised, now: float) -> None:
        first = entry.started_at == 0.0
        try:
            entry.process = entry.launch()
        except Exception as exc:
            entry.process = None
            self._crashed(entry, f"failed to start ({exc})", now)
            return
        if not first:
            entry.restarts += 1
            self.metrics.restarts.labels(entry.name).inc()
            log.warning(
                "%s restarted (restart #%d, pid %d)", entry.name, entry.restarts, entry.process.pid
            )
        self._started(entry, now)

    def _started(self, entry: Supervised, now: float) -> None:
        assert entry.process is not None
        entry.started_at = now
        self.metrics.restarts.labels(entry.name)  # exported as 0 before the first restart
        self.metrics.up.labels(entry.name).set(1)
        self.metrics.pid.labels(entry.name).set(entry.process.pid)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"{entry.name}.pid").write_text(f"{entry.process.pid}\n")

    def sample(self) -> None:
        """Record every live process's resident and peak memory, and the supervisor's own."""
        for entry in self.processes:
            if entry.process is None or entry.process.poll() is not None:
                continue
            memory = memory_of(entry.process.pid)
            if memory is None:
                continue
            rss, peak = memory
            entry.peak_rss = max(entry.peak_rss, peak)
            self.metrics.rss.labels(entry.name).set(rss)
            self.metrics.peak_rss.labels(entry.name).set(entry.peak_rss)
        own = memory_of(os.getpid())
        if own is not None:
            self.metrics.rss.labels("supervisor").set(own[0])
        self.metrics.peak_rss.labels("supervisor").set(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )

    def _maybe_rotate(self, now: float) -> None:
        entry = self._broker_entry
        if entry is None or entry.process is None or entry.process.poll() is not None:
            return
        s = self.settings
        reason = None
        if (
            s.broker_rotate_every_hours
            and now - entry.started_at >= s.broker_rotate_every_hours * 3600
        ):
            reason = "schedule"
        elif s.broker_rotate_rss_mb and now - self._last_rotation >= s.broker_rotate_min_gap_s:
            memory = memory_of(entry.process.pid)
            if memory is not None and memory[0] >= s.broker_rotate_rss_mb * 1024 * 1024:
                reason = "memory"
        if reason is not None:
            self.rotate_broker(reason)

    def rotate_broker(self, reason: str) -> None:
        """Restart the embedded broker empty on its port; the services' outboxes refill it with
        what a consumer may not have read yet (``shared.rotation``): the old broker is asked
        for its consumer groups' positions first, and the new one is told the answer."""
        entry = self._broker_entry
        assert entry is not None and entry.process is not None and entry.stop is not None
        memory = memory_of(entry.process.pid)
        log.warning(
            "rotating the broker (%s; rss %.0f MB)",
            reason,
            (memory[0] if memory else 0) / 1024 / 1024,
        )
        self.sample()
        began = time.monotonic()
        handover = self._handover()
        asked = time.monotonic() - began
        entry.stop(entry.process)
        entry.process = None
        now = time.monotonic()
        self._last_rotation = now
        self.metrics.rotations.labels(reason).inc()
        try:
            entry.process = entry.launch()
        except Exception as exc:
            self._crashed(entry, f"failed to start after rotation ({exc})", now)
            return
        self._started(entry, now)
        if handover is not None and self._bus is not None:
            try:
                asyncio.run(leave_handover(self._bus, handover))
            except Exception as exc:
                log.warning("telling the new broker where consumers had read to: %r", exc)
            else:
                log.info(
                    "rotated in %.1f s (the consumers' positions read in %.1f s): %s",
                    time.monotonic() - began,
                    asked,
                    handover,
                )

    def _handover(self) -> Handover | None:
        """Where the consumer groups of the suite's services had read to on the broker about to
        be rotated; None when it cannot tell (the relays then replay all they retain)."""
        broker, bus = self.broker, self._bus
        if broker is None or bus is None or not broker.cluster_id:
            return None
        since = asyncio.run(unread_since(bus, broker.cluster_id, CONSUMES))
        return None if since is None else Handover(broker.cluster_id, since)

    def stop(self) -> None:
        """Stop the services (newest first), then the broker."""
        services = [e for e in self.processes if e is not self._broker_entry]
        for entry in reversed(services):
            if entry.process is not None and entry.process.poll() is None:
                entry.process.send_signal(signal.SIGTERM)
        for entry in reversed(services):
            if entry.process is not None:
                terminate(entry.process)
            self.metrics.up.labels(entry.name).set(0)
        if self._broker_entry is not None and self.broker is not None:
            self.broker.stop()
        for entry in self.processes:
            (self.run_dir / f"{entry.name}.pid").unlink(missing_ok=True)


def wait_healthy(entries: list[Supervised], host: str, timeout: float = 30.0) -> None:
    """Block until every service answers ``/healthz``; raise if one exits or takes too long."""
    deadline = time.monotonic() + timeout
    for entry in entries:
        while True:
            assert entry.process is not None
            if entry.process.poll() is not None:
                raise RuntimeError(
                    f"{entry.name} exited with {entry.process.returncode}; see its log"
                )
            try:
                if httpx.get(f"http://{host}:{entry.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{entry.name} not healthy after {timeout}s")
            time.sleep(0.1)
