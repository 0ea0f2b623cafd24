"""The embedded suite as an operator runs it (``fengqiao up``), a load that posts tickets at it
the way a channel would (retrying until each is acknowledged), and a tally of what became of
every acknowledged ticket. Used by the fault tests (tests/e2e) and the soak (``make soak``).

The tally reads the services' SQLite files read-only — the databases are the truth:

- accepted: distinct tickets intake acknowledged (201, or 200 for a retried external id);
- stored: intake's ticket rows for the run's external ids;
- counted: acknowledged tickets whose every event reached evaluation: the events intake and
  dispatch emitted about the ticket (their audit trails hold one row per event, kept when the
  outbox is purged) are all in evaluation's ledger (one row per event applied), and dispatch
  emitted at least one.
  A ticket routed to the grab pool (``GrabOffered``) is delivered although nothing dispatched
  it yet: it waits for a department to take it, so "has a dispatch date" would wrongly call it
  lost;
- lost: accepted tickets not counted;
- duplicated: stored rows beyond one per external id, plus dispatches beyond one per ticket
  (a ``TicketReceived`` applied twice would route the ticket twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.evaluation.handlers import FOLDED

SERVICE_NAMES = ("intake", "dispatch", "mediation", "evaluation")
HOST = "127.0.0.1"
# The event types evaluation applies (the ones a ticket's figures are folded from).
EVALUATED = tuple(sorted(cls.event_type for cls in FOLDED))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) != 0


def _free_block(size: int) -> int:
    """The first of ``size`` consecutive free loopback ports."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            base = int(sock.getsockname()[1])
        if base + size < 65000 and all(_port_free(base + i) for i in range(size)):
            return base


@dataclass
class SuiteProcess:
    """A running ``fengqiao up``: its ports, its var directory, its supervisor's metrics."""

    var_dir: Path
    base_port: int
    broker_port: int
    process: subprocess.Popen[bytes]

    @property
    def metrics_port(self) -> int:
        return self.base_port + len(SERVICE_NAMES)

    def url(self, service: str) -> str:
        return f"http://{HOST}:{self.base_port + SERVICE_NAMES.index(service)}"

    def pid(self, name: str) -> int:
        """The PID of ``name`` (a service or ``broker``) as the supervisor last started it."""
        return int((self.var_dir / "run" / f"{name}.pid").read_text())

    def supervisor_metrics(self) -> dict[tuple[str, str], float]:
        """``(sample name, process or reason label) -> value`` from the supervisor's endpoint."""
        text = httpx.get(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5).text
        values: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                label = sample.labels.get("process") or sample.labels.get("reason") or ""
                values[(sample.name, label)] = sample.value
        return values

    def service_total(self, service: str, sample: str) -> float:
        """The sum of ``sample`` over its labels on ``service``'s own metrics endpoint."""
        text = httpx.get(f"{self.url(service)}/metrics", timeout=5).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == sample
        )

    def restarts(self, name: str) -> int:
        return int(self.supervisor_metrics().get(("fengqiao_supervisor_restarts_total", name), 0))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to ``name``; returns the PID it had."""
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60.0) -> None:
        """Until the supervisor has started ``name`` again and (a service) it answers /healthz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, httpx.HTTPError):
                if self.pid(name) != old_pid and (name == "broker" or self._healthy(name)):
                    return
            time.sleep(0.1)
        raise AssertionError(f"{name} was not restarted within {timeout}s")

    def _healthy(self, service: str) -> bool:
        return httpx.get(f"{self.url(service)}/healthz", timeout=1).status_code == 200

    def stop(self, timeout: float = 60.0) -> str:
        """SIGTERM, wait; returns what the command printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return (self.var_dir / "up.log").read_text(errors="replace")


def start_suite(
    var_dir: Path, *, env: Mapping[str, str] | None = None, timeout: float = 90.0
) -> SuiteProcess:
    """``fengqiao up`` on free ports with SQLite under ``var_dir``; returns once every service is
    ready (database, broker and consumer group joined) and the supervisor's endpoint answers.

    A port found free can be taken by another program before a service binds it; the suite
    then exits at start-up and is started again on other ports (three tries)."""
    for attempt in range(3):
        try:
            return _start_suite(var_dir, env=env, timeout=timeout)
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_suite(
    var_dir: Path, *, env: Mapping[str, str] | None = None, timeout: float = 90.0
) -> SuiteProcess:
    var_dir.mkdir(parents=True, exist_ok=True)
    base = _free_block(len(SERVICE_NAMES) + 1)
    broker_port = _free_block(1)
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("DATABASE_URL") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    # The load comes from one address, which intake's per-client rate limit would throttle;
    # these runs measure faults and rotations, not the limit (tests/integration covers it).
    child_env.setdefault("INTAKE_PUBLIC_RATE_LIMIT", "")
    child_env.update(env or {})
    with open(var_dir / "up.log", "ab") as out:
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
                str(var_dir),
            ],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    suite = SuiteProcess(var_dir, base, broker_port, process)
    deadline = time.monotonic() + timeout
    pending = [f"{suite.url(n)}/readyz" for n in SERVICE_NAMES]
    pending.append(f"http://{HOST}:{suite.metrics_port}/metrics")
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"fengqiao up exited ({process.returncode}): {suite.stop()}")
        if time.monotonic() > deadline:
            output = suite.stop()
            raise TimeoutError(f"suite not ready after {timeout}s ({pending[0]}): {output}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(pending[0], timeout=2).status_code == 200:
                pending.pop(0)
                continue
        time.sleep(0.2)
    return suite


# Fault runs: groups that join in about a second, logs that keep to warnings.
FAULT_ENV = {
    "KAFKA_SESSION_TIMEOUT_MS": "2000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "LOG_LEVEL": "WARNING",
}


@contextlib.contextmanager
def fault_suite(var_dir: Path, env: Mapping[str, str]) -> Iterator[SuiteProcess]:
    """``start_suite`` with ``FAULT_ENV`` and ``env``; stopped at the end, which must be clean."""
    suite = start_suite(var_dir, env={**FAULT_ENV, **env})
    try:
        yield suite
    finally:
        output = suite.stop()
        assert suite.process.returncode == 0, output


def ticket(run: str, n: int) -> dict[str, str]:
    """One hotline ticket with an external id of its own, so a retry is recognised."""
    return {
        "external_id": f"{run}-{n}",
        "title": f"路灯不亮{n}",
        "content": "小区门口的路灯坏了三天，晚上回家很不方便",
        "category_code": "0102",
    }


@dataclass
class Load:
    """What a load run got back: external id → ticket id for every acknowledged ticket."""

    run: str
    accepted: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    refusals: dict[int, int] = field(default_factory=dict)  # status → how many answers


async def post_tickets(
    intake_url: str,
    load: Load,
    numbers: range,
    *,
    concurrency: int = 8,
    per_ticket_timeout: float = 120.0,
    client: httpx.AsyncClient | None = None,
    make: Callable[[str, int], dict[str, str]] = ticket,
) -> None:
    """Post tickets ``numbers`` of ``load.run``, each retried (same external id) until intake
    acknowledges it: through refused connections while intake restarts and 503s while its
    database is away. Raises if one is still unacknowledged after ``per_ticket_timeout``.
    ``make(run, n)`` builds ticket ``n``'s body."""
    queue = iter(numbers)
    own = client is None
    http = client or httpx.AsyncClient(
        base_url=intake_url, timeout=10, limits=httpx.Limits(max_connections=concurrency)
    )

    async def post_one(n: int) -> None:
        deadline = time.monotonic() + per_ticket_timeout
        delay = 0.05
        while True:
            try:
                response = await http.post("/tickets", json=make(load.run, n))
                if response.status_code in (200, 201):
                    load.accepted[f"{load.run}-{n}"] = response.json()["ticket_id"]
                    return
                load.refusals[response.status_code] = load.refusals.get(response.status_code, 0) + 1
                if response.status_code < 500 and response.status_code != 429:
                    raise AssertionError(
                        f"ticket {n} refused: {response.status_code} {response.text}"
                    )
                delay = float(response.headers.get("retry-after", delay))
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"ticket {load.run}-{n} not acknowledged in {per_ticket_timeout}s"
                )
            load.retries += 1
            await asyncio.sleep(min(delay, 1.0))
            delay = min(delay * 2, 1.0)

    async def worker() -> None:
        for n in queue:
            await post_one(n)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if own:
            await http.aclose()


@dataclass
class Tally:
    accepted: int
    stored: int
    counted: int
    lost: int
    duplicated: int

    def line(self, label: str) -> str:
        return (
            f"{label}: accepted {self.accepted} / stored {self.stored} / counted {self.counted} / "
            f"lost {self.lost} / duplicated {self.duplicated}"
        )


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def _emitted(conn: sqlite3.Connection, ids: set[str]) -> dict[str, set[str]]:
    """Ticket id → the ids of the events (of the types evaluation folds) one service emitted
    about the run's tickets, from its audit trail."""
    marks = ",".join("?" * len(EVALUATED))
    events: dict[str, set[str]] = {}
    for ticket_id, event_id in conn.execute(
        f"SELECT ticket_id, event_id FROM audit_trail WHERE event_type IN ({marks})",
        EVALUATED,
    ):
        if ticket_id in ids:
            events.setdefault(ticket_id, set()).add(event_id)
    return events


def tally(var_dir: Path, load: Load) -> Tally:
    """Count, in the databases, what became of every ticket ``load`` got acknowledged."""
    like = f"{load.run}-%"
    ids = set(load.accepted.values())
    with _read_only(var_dir / "intake.db") as conn:
        stored, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT external_id) FROM tickets WHERE external_id LIKE ?",
            (like,),
        ).fetchone()
        received = _emitted(conn, ids)
    with _read_only(var_dir / "dispatch.db") as conn:
        routed = _emitted(conn, ids)
        extra_dispatches = sum(
            count - 1
            for ticket_id, count in conn.execute(
                "SELECT ticket_id, count(*) FROM dispatches GROUP BY ticket_id HAVING count(*) > 1"
            )
            if ticket_id in ids
        )
    with _read_only(var_dir / "evaluation.db") as conn:
        applied = {row[0] for row in conn.execute("SELECT event_id FROM eval_ledger")}
    counted = sum(
        1
        for ticket_id in ids
        if received.get(ticket_id)
        and routed.get(ticket_id)
        and received[ticket_id] <= applied
        and routed[ticket_id] <= applied
    )
    return Tally(
        accepted=len(ids),
        stored=int(stored),
        counted=counted,
        lost=len(ids) - counted,
        duplicated=int(stored) - int(distinct) + extra_dispatches,
    )


async def wait_counted(
    suite: SuiteProcess, load: Load, *, timeout: float = 60.0, interval: float = 0.5
) -> Tally:
    """Wait until evaluation counts every acknowledged ticket (or the timeout); the tally."""
    deadline = time.monotonic() + timeout
    while True:
        result = tally(suite.var_dir, load)
        if result.lost == 0 or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)
