"""Whole-suite benchmark: the embedded suite as ``make run`` starts it, under a surge of tickets.

    python -m bench.suite [--seconds 300] [--connections 16] [--databases sqlite,postgres]
                          [--drain-timeout 300] [--postgres URL] [--out FILE]
                          [--stall-evaluation AT:SECONDS] [--windows SECONDS]

For each database: ``fengqiao up`` on free ports (the embedded broker and the four services, one
process each, exactly as ``make run`` runs them) with SQLite files — the default — or with
PostgreSQL URLs for all four services, each in its own schema. One probe ticket is followed
through to evaluation first (the consumers have joined; it is not counted). Then wrk posts
distinct ~1 KB Chinese tickets to intake (``bench/post_suite_ticket.lua``: real addresses of the
demo city, a category, a distinct citizen and external id each) with N connections for S
seconds, and the script polls evaluation's ``GET /summary`` until received == dispatched ==
the tickets intake stored: the time that takes after the load stops is the consumer lag.

Received → dispatched latency is read after the suite has stopped, from the services' own rows:
intake's ``tickets.received_at`` (stamped when intake accepted the post) against the earliest
``dispatches.assigned_at`` of the ticket in dispatch's database (stamped by dispatch's clock when
its consumer routed the ticket). Nothing is sampled during the load, so the measurement adds no
work to the suite. Also reported: tickets/s accepted (2xx answers) and dispatched (first
assignments inside the load window), wrk's CPU share, each process's CPU share during the load
and its peak RSS (VmHWM), and the lines with ``database is locked`` and with level error in each
service's log (kept in ``bench/results/suite/<database>/log/``).

The drain (evaluation from the load's end until lag is zero): the events it consumed, per
second, its process's and (PostgreSQL) its backends' CPU an event, and its ticket folds resumed
or refolded. ``--stall-evaluation AT:SECONDS`` stops evaluation's process that long mid-load, so
that there is a backlog to drain.

``--windows SECONDS`` (``make bench``: 30) cuts the load into stretches: every SECONDS each
process's CPU (``/proc``), each service's backends' (the backend sampler's reads) and the
machine's busy and stolen CPU (``/proc/stat``) are noted — no statement, no request — and after
the run each stretch's tickets are counted from intake's ``received_at``: a table of the rate
and the CPU a ticket stretch by stretch, which shows what a long run costs that a short one
does not.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles
from typing import Any

import asyncpg
import httpx

from bench.intake import (
    DEPLOYMENT_SECRETS,
    POSTGRES_URL,
    PROBLEMS,
    RESULTS,
    ROOT,
    cpu_seconds,
    demo_places,
    machine_busy,
    machine_times,
    missed_by,
    peak_rss_mb,
    process_tree,
    require_wrk,
    run_wrk,
    spawn_logged,
)

SERVICES = ("intake", "dispatch", "mediation", "evaluation")
TARGETS = {
    "dispatched_per_s": "≥ 1,000 tickets/s sustained for 5 minutes",
    "p99_s": "p99 received → dispatched < 1 s",
    "lag_s": "consumer lag back to zero within seconds",
    "locked": "SQLite: no lock error under the same load",
}

# Roads and street lights (0101, 0102) in the urban district go to the grab pool, where a ticket
# counts as dispatched only once a department grabs it, and nobody grabs in a benchmark: the load
# uses the categories dispatch assigns itself.
ASSIGNED_PROBLEMS = [p for p in PROBLEMS if p[0] not in ("0101", "0102")]

# What citizens add to an appeal; each ticket draws six, so two tickets about the same place
# share few shingles and are seldom repeats of one another.
DETAILS = (
    "这个问题已经向物业反映过好几次，每次都说会处理，但一直没有下文。",
    "附近住的大多是老年人，行动不便，遇到这种情况特别危险。",
    "上周有个小孩在这里摔了一跤，膝盖都磕破了，家长很着急。",
    "晚上下班回家要经过这里，黑灯瞎火的，心里很害怕。",
    "社区网格员来看过一次，拍了照片，说会上报，之后就没人管了。",
    "我们几户邻居商量过，希望政府部门能出面协调解决。",
    "早晚高峰的时候这里人流量很大，问题更加突出。",
    "之前打过一次12345，工单显示已办结，但实际问题没有解决。",
    "附近有一所小学，每天接送孩子的家长很多，存在安全隐患。",
    "天气预报说这几天还要下雨，担心情况会进一步恶化。",
    "物业费每年都按时交，但是服务质量越来越差，业主意见很大。",
    "我家就住在一楼，受影响最严重，已经连续几个晚上没睡好觉。",
    "希望相关部门能尽快派人来现场查看，给我们一个明确的答复。",
    "如果需要我配合提供照片或者视频，可以随时联系我。",
    "周边商户也受到影响，生意比以前冷清了不少。",
    "听说隔壁小区也出现过类似问题，后来是街道出面解决的。",
    "我们不是无理取闹，只是希望正常的生活不受影响。",
    "这条路是附近居民去菜市场的必经之路，每天来往的人很多。",
    "问题持续时间太长了，大家的耐心都快耗尽了。",
    "前几天还有外卖电动车在这里出了事故，幸好人没有大碍。",
    "居委会说这不归他们管，让我们找街道，街道又让我们找物业。",
    "小区里住着不少残疾人和孕妇，出行尤其不方便。",
    "夏天快到了，蚊虫滋生，卫生状况让人担忧。",
    "我已经在业主群里征集了三十多户居民的签名，大家意见一致。",
    "希望这次能够彻底解决，不要只是临时应付一下。",
    "请处理完成后回访告知结果，谢谢工作人员的辛苦付出。",
    "我白天要上班，方便的话请下午六点以后电话联系我。",
    "现场情况我可以带工作人员去看，位置不太好找。",
    "周末这里有很多人遛狗散步，问题影响面比较大。",
    "附近的监控摄像头可能拍到了相关情况，可以调取查看。",
    "之前媒体也报道过这个地方，但是到现在还没有改善。",
    "我们愿意配合整改，只要能尽快把事情解决好。",
    "老旧小区改造的时候没有把这个问题考虑进去，留下了隐患。",
    "这段时间施工车辆进出频繁，情况比以前更严重了。",
    "希望能给一个具体的处理时限，让居民心里有个底。",
    "感谢热线平台，之前反映的其他问题都处理得很及时。",
)


@dataclass
class ProcessUsage:
    name: str
    pid: int
    cpu_load: float  # cores, over the load window
    cpu_drain: float | None  # cores, from the end of the load until lag was zero (or timeout)
    peak_rss_mb: float | None
    # CPU milliseconds over the load window per ticket dispatched in it: on a machine shared
    # with others this compares code better than a rate does.
    cpu_ms_per_ticket: float | None = None


@dataclass
class Drain:
    """Evaluation from the end of the load until lag was zero (or the timeout): what it applied,
    how fast, and its CPU an event — its process and its PostgreSQL backends."""

    events: int  # consumed (``fengqiao_events_consumed_total``) in the window
    seconds: float
    events_per_s: float | None
    process_ms_per_event: float | None
    backends_ms_per_event: float | None  # PostgreSQL only
    resumed: int  # ticket folds onto a kept state (``fengqiao_evaluation_folds_total``)
    refolded: int  # ticket folds of a whole ledger
    stalled: str | None = None  # ``--stall-evaluation``, if the backlog was made


@dataclass
class DatabaseUsage:
    """One service's PostgreSQL backends (its connections' ``application_name``) over the load."""

    service: str
    backends: int  # seen during the load (the pool's connections, and any opened meanwhile)
    opened: int  # of those, started during the load
    closed: int  # of those, gone before it ended: their CPU after their last sample is missed
    cpu_load: float  # cores
    cpu_ms_per_ticket: float | None
    # Counted in the service's processes (``bench/statement_count``): statements the server ran
    # (an executemany of n rows is n), and the transactions among them (BEGIN); None when not
    # counted.
    statements_per_ticket: float | None = None
    transactions_per_ticket: float | None = None
    statements_by_kind: dict[str, int] = field(default_factory=dict)  # by first keyword
    top_statements: list[tuple[str, int]] = field(default_factory=list)
    # ``--statement-cpu``: the statements by their backends' CPU, µs a ticket, and executions.
    statement_cpu: list[tuple[str, float, int]] = field(default_factory=list)


@dataclass
class Window:
    """One stretch of the load (``--windows``): the tickets intake received in it and the CPU
    each process and each service's backends used, a ticket."""

    ends_s: float  # seconds into the load
    tickets_per_s: float
    processes_ms: dict[str, float]  # process label → CPU ms a ticket received in the window
    backends_ms: dict[str, float]  # service → its backends' CPU ms a ticket (PostgreSQL)
    total_ms: float
    machine_cores: float  # the whole machine's busy cores (steal included)
    steal_cores: float  # time the hypervisor gave the machine's cores to others


@dataclass
class Snapshot:
    at: datetime
    processes: dict[str, float]  # label → CPU seconds so far
    backends: dict[str, float]  # service → its backends' CPU seconds in the window so far
    machine: float = 0.0  # the machine's busy CPU seconds so far, steal included
    steal: float = 0.0  # of which stolen


class WindowSampler:
    """Every ``seconds`` of the load, each process's CPU so far (``/proc``) and each service's
    backends' (what the backend sampler has read): two file reads a process, no statement and
    no request to the suite. The tickets a window received are counted after the run, from
    intake's ``received_at``."""

    def __init__(
        self, seconds: float, names: dict[int, str], backends: BackendSampler | None
    ) -> None:
        self._seconds = seconds
        self._names = names
        self._backends = backends
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshots: list[Snapshot] = []

    def _snap(self) -> None:
        used = cpu_seconds(list(self._names))
        self.snapshots.append(
            Snapshot(
                datetime.now(UTC),
                {self._names[pid]: cpu for pid, cpu in used.items()},
                self._backends.so_far() if self._backends is not None else {},
                *machine_times(),
            )
        )

    def start(self) -> None:
        self._snap()

        def run() -> None:
            while not self._stop.wait(self._seconds):
                self._snap()

        self._thread = threading.Thread(target=run, name="window-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The last snapshot, at the load's end; once."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._snap()
        # A stretch of less than half a period is too short to read: the one before grows.
        taken = self.snapshots
        if len(taken) > 2 and (taken[-1].at - taken[-2].at).total_seconds() < self._seconds / 2:
            del taken[-2]


def window_rows(snapshots: Sequence[Snapshot], received: Iterable[datetime]) -> list[Window]:
    """Each stretch between two snapshots: tickets received in it a second, and each process's
    and service's CPU over those tickets (a stretch that received none is left out)."""
    times = sorted(received)
    rows = []
    for before, after in itertools.pairwise(snapshots):
        tickets = bisect.bisect_right(times, after.at) - bisect.bisect_right(times, before.at)
        seconds = (after.at - before.at).total_seconds()
        if not tickets or seconds <= 0:
            continue
        per = 1000 / tickets
        processes = {
            k: round((v - before.processes.get(k, 0.0)) * per, 3)
            for k, v in after.processes.items()
        }
        backends = {
            k: round((v - before.backends.get(k, 0.0)) * per, 3) for k, v in after.backends.items()
        }
        rows.append(
            Window(
                ends_s=round((after.at - snapshots[0].at).total_seconds(), 1),
                tickets_per_s=round(tickets / seconds, 1),
                processes_ms=processes,
                backends_ms=backends,
                total_ms=round(sum(processes.values()) + sum(backends.values()), 3),
                machine_cores=round((after.machine - before.machine) / seconds, 2),
                steal_cores=round((after.steal - before.steal) / seconds, 2),
            )
        )
    return rows


@dataclass
class SuiteResult:
    database: str
    seconds: int
    connections: int
    accepted: int  # 2xx answers wrk counted
    accepted_per_s: float
    post_p50_ms: float
    post_p99_ms: float
    wrk_errors: int
    wrk_non_2xx: int
    wrk_cpu_share: float
    machine_busy_load: float  # cores busy on the whole machine during the load (of 2)
    suite_cpu_load: float  # cores used by the suite's own processes during the load
    stored: int  # tickets intake stored (without the probe)
    dispatched: int  # of those, assigned by dispatch when the suite stopped
    dispatched_in_load: int  # first assignments inside the load window
    dispatched_per_s: float  # dispatched_in_load / load seconds
    end_to_end_per_s: float | None  # stored / (last first-assignment - load start)
    p50_s: float | None  # received → dispatched
    p99_s: float | None
    max_s: float | None
    lag_zero_s: float | None  # after the load stopped; None: not within the drain timeout
    last_summary: dict[str, int]
    probe_s: float  # the probe ticket, received → counted dispatched by evaluation, cold
    database_locked: dict[str, int] = field(default_factory=dict)  # log lines, by service
    error_lines: dict[str, int] = field(default_factory=dict)  # level error or worse
    processes: list[ProcessUsage] = field(default_factory=list)
    database_usage: list[DatabaseUsage] = field(default_factory=list)  # PostgreSQL only
    drain: Drain | None = None
    windows: list[Window] = field(default_factory=list)  # ``--windows``
    latency_source: str = (
        "intake tickets.received_at vs min(dispatch dispatches.assigned_at), read after the run"
    )


# --- the suite ---------------------------------------------------------------------------------


def free_base_port(count: int = 4) -> int:
    """A port such that it and the next ``count - 1`` are all free (``fengqiao up`` needs four)."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no four consecutive free ports")


def suite_environment(
    database: str,
    postgres: str,
    stamp: Stamp,
    statements: Path | None = None,
    statement_cpu: bool = False,
) -> dict[str, str]:
    """``make run``'s environment: the embedded broker and SQLite files unless PostgreSQL.

    On PostgreSQL each service's connections carry an ``application_name`` of this run (the
    backends' CPU is read by it), and with ``statements`` every process of the suite counts what
    it sends (``bench/statement_count``) into that folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.endswith(("_DATABASE_URL", "_DATABASE_SCHEMA"))
    }
    # The load comes from one address (wrk on this machine): the per-client limit on intake's
    # public routes would measure the limiter, not the suite.
    env["INTAKE_PUBLIC_RATE_LIMIT"] = ""
    if database == "postgres":
        env.update(DEPLOYMENT_SECRETS)
        for name in SERVICES:
            env[f"{name.upper()}_DATABASE_URL"] = postgres
            env[f"{name.upper()}_DATABASE_SCHEMA"] = schema_name(name, stamp)
            env[f"{name.upper()}_DATABASE_APPLICATION_NAME"] = application_name(name, stamp)
        if statements is not None:
            statements.mkdir(parents=True, exist_ok=True)
            env["FENGQIAO_BENCH_STATEMENTS"] = str(statements)
            if statement_cpu:
                env["FENGQIAO_BENCH_STATEMENT_CPU"] = "1"
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(STATEMENT_COUNT), env.get("PYTHONPATH", "")) if p
            )
    return env


STATEMENT_COUNT = Path(__file__).with_name("statement_count")  # the suite's sitecustomize


def application_name(service: str, stamp: Stamp) -> str:
    """What the service's PostgreSQL connections are called in ``pg_stat_activity`` in this run
    (63 characters at most, or PostgreSQL cuts it)."""
    return f"fq-{stamp}-{service}"[:63]


SCHEMA_PREFIX = "bench_suite_"


@dataclass(frozen=True)
class Stamp:
    """What makes a run's schemas and connection names its own (``str()`` of it: the checkout's
    folder name, several checkouts sharing one PostgreSQL, and the time), and what its schemas'
    names begin with (``--schema-prefix``: a shared server may allow a user some prefixes only)."""

    run: str
    schema_prefix: str = SCHEMA_PREFIX

    def __str__(self) -> str:
        return self.run


def schema_name(service: str, stamp: Stamp) -> str:
    return f"{stamp.schema_prefix}{service}_{stamp.run}"


def run_stamp(schema_prefix: str = SCHEMA_PREFIX) -> Stamp:
    checkout = re.sub(r"[^a-z0-9]+", "_", ROOT.name.lower()).strip("_")
    return Stamp(f"{checkout}_{int(time.time())}", schema_prefix)


# What a process of the suite logs when a port picked free was taken before it bound it (another
# benchmark on the machine): uvicorn's ``[Errno 98] … address already in use``, tansu's ``Address
# in use (os error 98)``.
PORT_TAKEN = re.compile(r"errno 98\b|os error 98\b|address already in use", re.IGNORECASE)
START_TRIES = 5  # starts on new ports after a port clash, at most


class PortTaken(RuntimeError):
    """``fengqiao up`` stopped at start-up because a port it was given was taken meanwhile."""


def port_taken(log_dir: Path) -> bool:
    """Whether the logs of a start-up that failed say a port was taken."""
    for log in sorted(log_dir.glob("*.log")):
        with contextlib.suppress(OSError):
            if PORT_TAKEN.search(log.read_text(errors="replace")):
                return True
    return False


def start_suite_on_free_ports(
    env: dict[str, str], var_dir: Path, tries: int = START_TRIES
) -> tuple[subprocess.Popen[bytes], int]:
    """``start_suite`` on free ports; again on new ones, ``tries`` times at most, while it fails
    because one was taken between the pick and the bind (other benchmarks on the machine pick
    ports too). The failed start's logs go, so each try is judged by its own. Returns the
    process and its base port."""
    for attempt in range(1, tries + 1):
        base = free_base_port()
        try:
            return start_suite(env, var_dir, base), base
        except PortTaken as exc:
            if attempt == tries:
                raise
            print(f"{exc}; starting again on new ports ({attempt}/{tries})", file=sys.stderr)
            for log in (var_dir / "log").glob("*.log"):
                log.unlink()
    raise AssertionError("unreachable")


def start_suite(env: dict[str, str], var_dir: Path, base: int) -> subprocess.Popen[bytes]:
    """``fengqiao up`` on ``base`` (and a free broker port), waited for until every service is
    ready; ``PortTaken`` if it stopped because a port was taken."""
    log = var_dir / "log" / "up.log"
    proc = spawn_logged(
        [
            sys.executable,
            "-m",
            "fengqiao.cli",
            "up",
            "--base-port",
            str(base),
            "--broker-port",
            str(free_base_port(1)),
            "--var-dir",
            str(var_dir),
        ],
        env,
        log,
    )
    deadline = time.monotonic() + 180
    for port in range(base, base + len(SERVICES)):
        while True:
            if proc.poll() is not None:
                if port_taken(log.parent):
                    with contextlib.suppress(ProcessLookupError):  # whatever it started
                        os.killpg(proc.pid, signal.SIGTERM)
                    raise PortTaken(f"fengqiao up on port {base}: a port was taken")
                tail = log.read_text(errors="replace").strip().splitlines()[-6:]
                raise RuntimeError(
                    f"fengqiao up exited ({proc.returncode}); the end of {log}:\n" + "\n".join(tail)
                )
            with contextlib.suppress(httpx.HTTPError, ValueError):
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                # Ready, and its consumer (where it has one) in its group.
                if (
                    ready.status_code == 200
                    and ready.json()["checks"].get("consumer", "joined") == "joined"
                ):
                    break
            if time.monotonic() > deadline:
                stop_suite(proc)
                raise TimeoutError(f"the suite was not ready after 180 s; see {var_dir}/log")
            time.sleep(0.3)
    return proc


def stop_suite(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``fengqiao up`` (it stops its children and the broker); the group if stuck."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def profile_services(
    where: Path | None, database: str, names: dict[int, str], seconds: int
) -> list[subprocess.Popen[bytes]]:
    """py-spy on each service during the load (``--profile DIR``): raw stacks per process, to
    see where the time goes; nothing when not asked."""
    if where is None:
        return []
    where.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(where / f"suite-{database}-{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, name in names.items()
        if name in SERVICES
    ]


def label(pid: int) -> str:
    """Which part of the suite a process is, from its command line."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    for name in SERVICES:
        if f"services.{name}." in cmd:
            return name
    if "tansu" in cmd:
        return "broker (tansu)"
    if "fengqiao.cli" in cmd:
        return "fengqiao up"
    return cmd[:40]


def summary(port: int) -> dict[str, int]:
    answer = httpx.get(
        f"http://127.0.0.1:{port}/summary", headers={"X-Fengqiao-Role": "committee"}, timeout=10
    )
    answer.raise_for_status()
    return dict(answer.json())


def evaluation_counts(port: int) -> tuple[float, dict[str, float]]:
    """Evaluation's events consumed, all types, and its ticket folds by kind, from /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    consumed = 0.0
    folds: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fengqiao_events_consumed_total{"):
            consumed += float(line.rsplit(" ", 1)[1])
        elif line.startswith("fengqiao_evaluation_folds_total{"):
            kind = re.search(r'kind="(\w+)"', line)
            if kind is not None:
                folds[kind.group(1)] = float(line.rsplit(" ", 1)[1])
    return consumed, folds


def stall_timers(pid: int, spec: str | None) -> list[threading.Timer]:
    """``--stall-evaluation AT:SECONDS``: timers (started with the load) that stop evaluation's
    process (SIGSTOP) AT seconds into the load and continue it SECONDS later, to leave it a
    backlog to drain."""
    if not spec:
        return []
    at, _, seconds = spec.partition(":")
    stop = threading.Timer(float(at), os.kill, (pid, signal.SIGSTOP))
    go = threading.Timer(float(at) + float(seconds), os.kill, (pid, signal.SIGCONT))
    return [stop, go]


# --- the PostgreSQL backends ------------------------------------------------------------------


def backend_cpu(pid: int) -> float | None:
    """A backend's CPU seconds so far (it runs as another user; /proc/<pid>/stat is public)."""
    return cpu_seconds([pid]).get(pid)


class BackendSampler:
    """The CPU of each service's PostgreSQL backends over a window, found by ``application_name``.

    A backend's CPU is its ``/proc/<pid>/stat`` time; ``pg_stat_activity`` names the backends.
    Sampled every ``interval`` seconds on a connection of its own (named otherwise, so not
    counted), so a backend opened during the window is counted from zero (its start-up included)
    and one closed during it up to its last sample: what it used after that — at most
    ``interval`` of its time — is missed, and the number of such backends is reported. The
    pools keep their connections open, so few close.
    """

    def __init__(self, url: str, services: dict[str, str], interval: float = 0.25) -> None:
        self._url = url
        self._services = services  # application_name → service
        self._interval = interval
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.first: dict[int, float] = {}  # pid → CPU at the start (0 if opened later)
        self.last: dict[int, float] = {}  # pid → CPU at its last sample
        self.service: dict[int, str] = {}
        self.opened: set[int] = set()
        self.live: set[int] = set()  # at the last sample

    def start(self) -> None:
        """Begin the window: returns once every backend's CPU at the start is read."""
        self._thread = threading.Thread(target=self._run, name="backend-sampler", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"sampling the PostgreSQL backends failed: {self._error}")

    def stop(self) -> None:
        """End the window with one last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._error is not None:
            raise RuntimeError(f"sampling the PostgreSQL backends failed: {self._error}")

    def _run(self) -> None:
        try:
            asyncio.run(self._sample_until_stopped())
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc
            self._ready.set()

    async def _sample_until_stopped(self) -> None:
        conn = await asyncpg.connect(
            self._url, server_settings={"application_name": "fq-bench-backend-sampler"}
        )
        try:
            await self._sample(conn, first=True)
            self._ready.set()
            loop = asyncio.get_running_loop()
            while not self._stop.is_set():
                await loop.run_in_executor(None, self._stop.wait, self._interval)
                await self._sample(conn, first=False)
        finally:
            await conn.close()

    async def _sample(self, conn: asyncpg.Connection, *, first: bool) -> None:
        rows = await conn.fetch(
            "SELECT pid, application_name FROM pg_stat_activity"
            " WHERE application_name = ANY($1::text[])",
            list(self._services),
        )
        live = set()
        for pid, name in rows:
            used = backend_cpu(pid)
            if used is None:  # gone between the query and the read
                continue
            live.add(pid)
            if pid not in self.first:
                self.first[pid] = used if first else 0.0
                self.service[pid] = self._services[name]
                if not first:
                    self.opened.add(pid)
            self.last[pid] = used
        self.live = live

    def so_far(self) -> dict[str, float]:
        """Service → its backends' CPU seconds from the window's start to the last sample."""
        out: dict[str, float] = {}
        for pid, service in list(self.service.items()):
            out[service] = out.get(service, 0.0) + self.last.get(pid, 0.0) - self.first[pid]
        return out

    def usage(self) -> dict[str, tuple[float, int, int, int]]:
        """Service → (CPU seconds in the window, backends, opened, closed)."""
        cpu = self.so_far()
        out: dict[str, tuple[float, int, int, int]] = {}
        for pid, service in self.service.items():
            _, seen, opened, closed = out.get(service, (0.0, 0, 0, 0))
            out[service] = (
                cpu[service],
                seen + 1,
                opened + (pid in self.opened),
                closed + (pid not in self.live),
            )
        return out


def read_statement_counts(folder: Path, suffix: str = ".json") -> Counter[tuple[str, str]]:
    """(application_name, statement text) → executions so far, summed over the processes (with
    ``suffix`` ``.cpu``: their backends' CPU in nanoseconds, ``--statement-cpu``)."""
    total: Counter[tuple[str, str]] = Counter()
    for path in folder.glob(f"*{suffix}"):
        with contextlib.suppress(OSError, ValueError):
            for app, text, n in json.loads(path.read_text(encoding="utf-8")):
                total[(app, text)] += n
    return total


def statement_kind(text: str) -> str:
    """A statement's first keyword (``WITH`` for the chained inserts of a batch)."""
    return (text.split(None, 1) or ["?"])[0].rstrip(";").upper()


def database_usage(
    sampler: BackendSampler,
    services: dict[str, str],
    statements: Counter[tuple[str, str]] | None,
    *,
    load_s: float,
    tickets: int,
    statement_ns: Counter[tuple[str, str]] | None = None,
) -> list[DatabaseUsage]:
    """Each service's backends and statements over the load, per ticket dispatched in it."""
    cpu = sampler.usage()
    by_service: dict[str, Counter[str]] = {name: Counter() for name in SERVICES}
    if statements is not None:
        for (app, text), n in statements.items():
            if app in services and n > 0:
                by_service[services[app]][text] += n
    out = []
    for name in SERVICES:
        used, seen, opened, closed = cpu.get(name, (0.0, 0, 0, 0))
        texts = by_service[name]
        kinds: Counter[str] = Counter()
        for text, n in texts.items():
            kinds[statement_kind(text)] += n
        counted = statements is not None and tickets > 0
        out.append(
            DatabaseUsage(
                service=name,
                backends=seen,
                opened=opened,
                closed=closed,
                cpu_load=round(used / load_s, 3),
                cpu_ms_per_ticket=round(used / tickets * 1000, 3) if tickets else None,
                statements_per_ticket=(
                    round(sum(texts.values()) / tickets, 3) if counted else None
                ),
                transactions_per_ticket=round(kinds["BEGIN"] / tickets, 3) if counted else None,
                statements_by_kind=dict(kinds.most_common()),
                top_statements=texts.most_common(12),
                statement_cpu=[
                    (text, round(ns / 1e3 / tickets, 2), texts[text])
                    for (app, text), ns in (statement_ns or Counter()).most_common()
                    if services.get(app) == name and ns > 0 and tickets
                ][:12],
            )
        )
    return out


# --- the services' own rows ---------------------------------------------------------------------


def _utc(value: Any) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite hands back text, naive UTC)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    else:
        moment = datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


INTAKE_ROWS = "SELECT ticket_id, received_at FROM {p}tickets"
DISPATCH_ROWS = "SELECT ticket_id, min(assigned_at) FROM {p}dispatches GROUP BY ticket_id"


def read_rows(
    database: str, var_dir: Path, postgres: str, stamp: Stamp
) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """(ticket → received_at) from intake, (ticket → first assigned_at) from dispatch."""
    if database == "sqlite":
        out = []
        for service, query in (("intake", INTAKE_ROWS), ("dispatch", DISPATCH_ROWS)):
            with contextlib.closing(sqlite3.connect(var_dir / f"{service}.db")) as conn:
                rows = conn.execute(query.format(p="")).fetchall()
            out.append({t: _utc(at) for t, at in rows if at is not None})
        return out[0], out[1]

    async def fetch() -> tuple[dict[str, datetime], dict[str, datetime]]:
        conn = await asyncpg.connect(postgres)
        try:
            out = []
            for service, query in (("intake", INTAKE_ROWS), ("dispatch", DISPATCH_ROWS)):
                rows = await conn.fetch(query.format(p=f'"{schema_name(service, stamp)}".'))
                out.append({r[0]: _utc(r[1]) for r in rows if r[1] is not None})
            return out[0], out[1]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def count_stored(database: str, var_dir: Path, postgres: str, stamp: Stamp) -> int:
    """Tickets intake has stored so far (a read that takes no lock on either database)."""
    query = "SELECT count(*) FROM {p}tickets"
    if database == "sqlite":
        uri = f"file:{var_dir / 'intake.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return int(conn.execute(query.format(p="")).fetchone()[0])

    async def fetch() -> int:
        conn = await asyncpg.connect(postgres)
        try:
            return int(await conn.fetchval(query.format(p=f'"{schema_name("intake", stamp)}".')))
        finally:
            await conn.close()

    return asyncio.run(fetch())


async def drop_schemas(postgres: str, stamp: Stamp) -> None:
    conn = await asyncpg.connect(postgres)
    try:
        for name in SERVICES:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema_name(name, stamp)}" CASCADE')
    finally:
        await conn.close()


def log_counts(log_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Per service log: lines saying ``database is locked``, lines at level error or worse."""
    locked: dict[str, int] = {}
    errors: dict[str, int] = {}
    for name in SERVICES:
        path = log_dir / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        locked[name] = sum("database is locked" in line for line in lines)
        errors[name] = sum(_is_error(line) for line in lines)
    return locked, errors


def _is_error(line: str) -> bool:
    with contextlib.suppress(ValueError):
        record = json.loads(line)
        if isinstance(record, dict):
            level = str(record.get("level") or record.get("levelname") or "").lower()
            return level in ("error", "critical", "exception")
    return line.startswith(("ERROR", "CRITICAL", "Traceback"))


# --- the case ------------------------------------------------------------------------------------


def write_ingredients(path: Path, *, seed: int = 13) -> None:
    """Leads (a problem at a real address) and details for the Lua script to combine."""
    rng = random.Random(seed)
    lines = []
    for place in demo_places():
        for code, title, text in rng.sample(ASSIGNED_PROBLEMS, 3):
            lead = text.format(place=place[-8:], n=rng.randrange(2, 9))
            lines.append(f"L\t{code}\t{title}\t{place}\t{lead}")
    lines += [f"D\t{d}" for d in DETAILS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def probe(intake: str, evaluation_port: int, timeout: float = 120.0) -> tuple[str, float]:
    """Post one ticket and wait until evaluation counts it dispatched: the pipeline is live."""
    started = time.monotonic()
    answer = httpx.post(
        f"{intake}/tickets",
        json={
            "external_id": f"suite-probe-{time.time_ns()}",
            "title": "垃圾未及时清运",
            "content": "探测工单：" + DETAILS[0],
            "citizen_phone": "13900000000",
            "address": demo_places()[0],
            "category_code": "0204",
        },
        headers={"X-Fengqiao-Role": "hotline"},
        timeout=30,
    )
    answer.raise_for_status()
    ticket_id = str(answer.json()["ticket_id"])
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if summary(evaluation_port).get("dispatched", 0) >= 1:
                return ticket_id, round(time.monotonic() - started, 2)
        time.sleep(0.2)
    raise TimeoutError(f"the probe ticket {ticket_id} was not counted dispatched in {timeout} s")


def run_case(database: str, args: argparse.Namespace, ingredients: Path) -> SuiteResult:
    """One database's case; whatever happens, its schemas or SQLite files are removed after."""
    stamp = run_stamp(getattr(args, "schema_prefix", SCHEMA_PREFIX))
    var_dir = RESULTS / "suite" / database
    if var_dir.exists():
        for old in var_dir.rglob("*"):
            if old.is_file():
                old.unlink()
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _measure_case(database, args, ingredients, var_dir, stamp)
    finally:
        if database == "postgres":
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                asyncio.run(drop_schemas(args.postgres, stamp))
        else:
            for db in var_dir.glob("*.db*"):  # the logs stay; the databases are large
                db.unlink()


def _measure_case(
    database: str, args: argparse.Namespace, ingredients: Path, var_dir: Path, stamp: Stamp
) -> SuiteResult:
    postgres = database == "postgres"
    counting = postgres and getattr(args, "count_statements", True)
    folder = var_dir / "statements" if counting else None
    apps = {application_name(name, stamp): name for name in SERVICES}
    sampler = BackendSampler(args.postgres, apps) if postgres else None
    statement_cpu = folder is not None and getattr(args, "statement_cpu", False)
    env = suite_environment(database, args.postgres, stamp, folder, statement_cpu)
    proc, base = start_suite_on_free_ports(env, var_dir)
    evaluation_port = base + SERVICES.index("evaluation")
    intake = f"http://127.0.0.1:{base + SERVICES.index('intake')}"
    statements: Counter[tuple[str, str]] | None = None
    statement_ns: Counter[tuple[str, str]] | None = None
    # Whatever fails once the suite is up, it is stopped below, its profilers with it.
    timers: list[threading.Timer] = []
    spies: list[subprocess.Popen[bytes]] = []
    windows: WindowSampler | None = None
    try:
        probe_id, probe_s = probe(intake, evaluation_port)
        pids = process_tree(proc.pid)
        names = {pid: label(pid) for pid in pids}
        spies = profile_services(getattr(args, "profile", None), database, names, args.seconds)
        if sampler is not None:
            sampler.start()
        counted0 = read_statement_counts(folder) if folder is not None else None
        ns0 = read_statement_counts(folder, ".cpu") if statement_cpu and folder else None
        evaluation_pid = next(pid for pid, name in names.items() if name == "evaluation")
        stall = getattr(args, "stall_evaluation", None)
        timers = stall_timers(evaluation_pid, stall)
        for timer in timers:
            timer.start()
        every = getattr(args, "windows", 0)
        if every:
            windows = WindowSampler(every, names, sampler)
        cpu0, machine0 = cpu_seconds(pids), machine_busy()
        if windows is not None:
            windows.start()
        load_started = datetime.now(UTC)
        wall0 = time.monotonic()
        wrk, wrk_cpu = run_wrk(
            f"{intake}/tickets",
            seconds=args.seconds,
            connections=args.connections,
            script="post_suite_ticket.lua",
            script_args=(str(ingredients),),
        )
        wall1 = time.monotonic()
        load_ended = datetime.now(UTC)
        if windows is not None:
            windows.stop()
        for timer in timers:
            timer.cancel()
        if timers:
            os.kill(evaluation_pid, signal.SIGCONT)
        cpu1, machine1 = cpu_seconds(pids), machine_busy()
        if sampler is not None:
            sampler.stop()
        drain_sampler = (
            BackendSampler(args.postgres, {application_name("evaluation", stamp): "evaluation"})
            if postgres
            else None
        )
        if drain_sampler is not None:
            drain_sampler.start()
        counts0 = evaluation_counts(evaluation_port)
        if folder is not None and counted0 is not None:
            statements = read_statement_counts(folder)
            statements.subtract(counted0)
        if folder is not None and ns0 is not None:
            statement_ns = read_statement_counts(folder, ".cpu")
            statement_ns.subtract(ns0)
        for spy in spies:
            spy.wait(timeout=60)
        lag_zero_s: float | None = None
        last: dict[str, int] = {}
        while time.monotonic() - wall1 < args.drain_timeout:
            # A read that fails (a busy SQLite file, a refused connection) is tried again.
            with contextlib.suppress(
                httpx.HTTPError, sqlite3.Error, OSError, asyncpg.PostgresError
            ):
                last = summary(evaluation_port)
                stored_now = count_stored(database, var_dir, args.postgres, stamp)
                if last.get("received") == last.get("dispatched") == stored_now:
                    lag_zero_s = round(time.monotonic() - wall1, 1)
                    break
            time.sleep(0.5)
        wall2 = time.monotonic()
        cpu2 = cpu_seconds(pids)
        counts2 = evaluation_counts(evaluation_port)
        if drain_sampler is not None:
            drain_sampler.stop()
        peaks = peak_rss_mb(pids)
    finally:
        if windows is not None:
            windows.stop()  # at once if the load ended normally: stopped there already
        for timer in timers:
            timer.cancel()
        if timers:  # set once evaluation_pid is
            with contextlib.suppress(OSError):
                os.kill(evaluation_pid, signal.SIGCONT)
        for spy in spies:
            if spy.poll() is None:
                spy.terminate()
                spy.wait()
        stop_suite(proc)
    locked, errors = log_counts(var_dir / "log")
    received, assigned = read_rows(database, var_dir, args.postgres, stamp)
    received.pop(probe_id, None)
    waits = sorted(
        (assigned[t] - at).total_seconds() for t, at in received.items() if t in assigned
    )
    firsts = [assigned[t] for t in received if t in assigned]
    in_load = sum(load_started <= at <= load_ended for at in firsts)
    load_s = wall1 - wall0
    cuts = quantiles(waits, n=100, method="inclusive") if len(waits) >= 2 else None
    last_first = max(firsts, default=None)
    ok = wrk["requests"] - wrk["non_2xx"]
    return SuiteResult(
        database=database,
        seconds=args.seconds,
        connections=args.connections,
        accepted=ok,
        accepted_per_s=round(ok / (wrk["duration_us"] / 1e6), 1),
        post_p50_ms=round(wrk["p50_us"] / 1000, 1),
        post_p99_ms=round(wrk["p99_us"] / 1000, 1),
        wrk_errors=wrk["errors"],
        wrk_non_2xx=wrk["non_2xx"],
        wrk_cpu_share=round(wrk_cpu, 2),
        machine_busy_load=round((machine1 - machine0) / load_s, 2),
        suite_cpu_load=round(sum(cpu1.get(p, 0.0) - cpu0.get(p, 0.0) for p in pids) / load_s, 2),
        stored=len(received),
        dispatched=len(waits),
        dispatched_in_load=in_load,
        dispatched_per_s=round(in_load / load_s, 1),
        end_to_end_per_s=(
            round(len(received) / (last_first - load_started).total_seconds(), 1)
            if last_first is not None and len(waits) == len(received)
            else None
        ),
        p50_s=round(cuts[49], 3) if cuts else None,
        p99_s=round(cuts[98], 3) if cuts else None,
        max_s=round(waits[-1], 3) if waits else None,
        lag_zero_s=lag_zero_s,
        last_summary=last,
        probe_s=probe_s,
        database_locked=locked,
        error_lines=errors,
        windows=window_rows(windows.snapshots, received.values()) if windows is not None else [],
        processes=[
            ProcessUsage(
                name=names[pid],
                pid=pid,
                cpu_load=round((cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0)) / load_s, 2),
                cpu_drain=(
                    round((cpu2[pid] - cpu1.get(pid, 0.0)) / (wall2 - wall1), 2)
                    if pid in cpu2 and wall2 > wall1
                    else None
                ),
                peak_rss_mb=peaks.get(pid),
                cpu_ms_per_ticket=(
                    round((cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0)) / in_load * 1000, 3)
                    if in_load
                    else None
                ),
            )
            for pid in pids
        ],
        database_usage=(
            database_usage(
                sampler,
                apps,
                statements,
                load_s=load_s,
                tickets=in_load,
                statement_ns=statement_ns,
            )
            if sampler is not None
            else []
        ),
        drain=drain_of(
            counts0,
            counts2,
            wall2 - wall1,
            cpu2.get(evaluation_pid, 0.0) - cpu1.get(evaluation_pid, 0.0),
            drain_sampler.usage().get("evaluation", (None,))[0] if drain_sampler else None,
            stall,
        ),
    )


def drain_of(
    before: tuple[float, dict[str, float]],
    after: tuple[float, dict[str, float]],
    seconds: float,
    process_cpu: float,
    backends_cpu: float | None,
    stall: str | None,
) -> Drain:
    """Evaluation's drain from its counts at the load's end and when lag was zero."""
    events = int(after[0] - before[0])
    return Drain(
        events=events,
        seconds=round(seconds, 1),
        events_per_s=round(events / seconds) if seconds > 0 else None,
        process_ms_per_event=round(process_cpu / events * 1000, 4) if events else None,
        backends_ms_per_event=(
            round(backends_cpu / events * 1000, 4) if events and backends_cpu is not None else None
        ),
        resumed=int(after[1].get("resumed", 0) - before[1].get("resumed", 0)),
        refolded=int(after[1].get("refolded", 0) - before[1].get("refolded", 0)),
        stalled=stall,
    )


# --- report --------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "—" if value is None else fmt.format(value)


def render(outcomes: list[SuiteResult | SuiteFailure]) -> str:
    """Each database's run as Markdown, the issue's targets beside the numbers."""
    failed = []
    for f in outcomes:
        if isinstance(f, SuiteFailure):
            first_line, _, rest = f.reason.partition("\n")
            details = f"\n\n  ```\n{textwrap.indent(rest, '  ')}\n  ```" if rest else ""
            failed.append(f"- {f.database}: **not measured** — {first_line}{details}")
    results = [r for r in outcomes if isinstance(r, SuiteResult)]
    if not results:
        return "\n".join(failed)
    first = results[0]
    lines = [
        f"Whole suite (`fengqiao up`, one process per service, embedded broker): "
        f"{first.connections} connections for {first.seconds} s posting distinct ~1 KB tickets "
        f"(wrk); latency from {first.latency_source}.",
        "",
        "| database | accepted/s | dispatched/s in load (target ≥ 1,000) | end to end /s "
        "| received → dispatched p50 / p99 / max s (target p99 < 1) "
        "| lag zero after load (target: seconds) | POST p50 / p99 ms | wrk errors "
        "| `database is locked` lines (target 0) | error lines | wrk CPU | suite CPU "
        "| machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lag = (
            f"{r.lag_zero_s} s"
            if r.lag_zero_s is not None
            else (f"not within the timeout: {r.stored - r.dispatched} of {r.stored} undispatched")
        )
        lines.append(
            f"| {r.database} | {_num(r.accepted_per_s)} | {_num(r.dispatched_per_s)} "
            f"| {_num(r.end_to_end_per_s)} "
            f"| {_num(r.p50_s, '{:.2f}')} / {_num(r.p99_s, '{:.2f}')} / {_num(r.max_s, '{:.2f}')} "
            f"| {lag} | {r.post_p50_ms} / {r.post_p99_ms} | {r.wrk_errors} "
            f"| {_by_service(r.database_locked)} | {_by_service(r.error_lines)} "
            f"| {r.wrk_cpu_share} | {r.suite_cpu_load} | {r.machine_busy_load} |"
        )
    lines += [
        "",
        "| database | process | CPU during load (cores) | CPU ms per ticket dispatched "
        "| CPU while draining | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for p in r.processes:
            lines.append(
                f"| {r.database} | {p.name} | {p.cpu_load} | {_num(p.cpu_ms_per_ticket, '{}')} "
                f"| {_num(p.cpu_drain, '{}')} | {_num(p.peak_rss_mb, '{:.0f}')} |"
            )
    usage = [(r.database, u) for r in results for u in r.database_usage]
    if usage:
        lines += [
            "",
            "| database | PostgreSQL backends of | backends (opened / closed in load) "
            "| CPU during load (cores) | CPU ms per ticket dispatched | statements per ticket "
            "| transactions per ticket |",
            "|---|---|---|---|---|---|---|",
        ]
        for database, u in usage:
            lines.append(
                f"| {database} | {u.service} | {u.backends} ({u.opened} / {u.closed}) "
                f"| {u.cpu_load} | {_num(u.cpu_ms_per_ticket, '{}')} "
                f"| {_num(u.statements_per_ticket, '{}')} "
                f"| {_num(u.transactions_per_ticket, '{}')} |"
            )
        for r in results:
            if r.database_usage:
                total = sum(u.cpu_ms_per_ticket or 0.0 for u in r.database_usage)
                python = sum(
                    p.cpu_ms_per_ticket or 0.0 for p in r.processes if p.name != "fengqiao up"
                )
                lines.append(
                    f"| {r.database} | all services | "
                    f"{sum(u.backends for u in r.database_usage)} | "
                    f"{round(sum(u.cpu_load for u in r.database_usage), 2)} "
                    f"| {total:.3f} (the suite's processes: {python:.3f}) | | |"
                )
    by_cpu = [(database, u) for database, u in usage if u.statement_cpu]
    if by_cpu:
        lines += [
            "",
            "| database | service | backends' CPU inside the statement, µs a ticket dispatched "
            "| executions | statement |",
            "|---|---|---|---|---|",
        ]
        for database, u in by_cpu:
            for text, us, calls in u.statement_cpu:
                lines.append(f"| {database} | {u.service} | {us} | {calls:,} | `{text[:100]}` |")
    for r in (r for r in results if r.windows):
        lines += ["", render_windows(r.database, r.windows)]
    drains = [r for r in results if r.drain is not None]
    if drains:
        lines += [
            "",
            "| database | evaluation stalled (at s : for s) | events drained after the load "
            "| seconds | events/s | process ms/event | backends ms/event "
            "| folds resumed / refolded |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in drains:
            d = r.drain
            assert d is not None
            lines.append(
                f"| {r.database} | {d.stalled or 'no'} | {d.events:,} | {d.seconds} "
                f"| {_num(d.events_per_s, '{:,.0f}')} | {_num(d.process_ms_per_event, '{}')} "
                f"| {_num(d.backends_ms_per_event, '{}')} | {d.resumed:,} / {d.refolded:,} |"
            )
    lines += ["", "Against the targets:", ""]
    for r in results:
        lines.append(f"- {r.database}: {verdict(r)}")
    return "\n".join(lines + failed)


def render_windows(database: str, windows: Sequence[Window]) -> str:
    """The load a stretch at a time: how its rate and CPU a ticket moved as the tables grew."""
    processes = list(dict.fromkeys(k for w in windows for k in w.processes_ms))
    backends = sorted(
        {k for w in windows for k in w.backends_ms},
        key=lambda k: (processes.index(k) if k in processes else len(processes), k),
    )
    head = [
        "ends (s)",
        "tickets/s",
        *processes,
        *(f"{k}'s backends" for k in backends),
        "all",
        "machine busy (cores)",
        "stolen (cores)",
    ]
    lines = [
        f"CPU ms a ticket received, a stretch of the load at a time ({database}):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for w in windows:
        cells = [
            f"{w.ends_s:g}",
            f"{w.tickets_per_s:,.0f}",
            *(f"{w.processes_ms.get(k, 0.0):.3f}" for k in processes),
            *(f"{w.backends_ms.get(k, 0.0):.3f}" for k in backends),
            f"{w.total_ms:.3f}",
            f"{w.machine_cores:.2f}",
            f"{w.steal_cores:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _by_service(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})"


def verdict(r: SuiteResult) -> str:
    parts = []
    rate = r.dispatched_per_s
    parts.append(
        f"{rate:,.0f} dispatched/s against {TARGETS['dispatched_per_s']} — "
        + missed_by(rate, 1000)
        + ("" if r.seconds >= 300 else f" (a {r.seconds} s run, not 5 minutes)")
    )
    if r.p99_s is not None:
        parts.append(
            f"p99 {r.p99_s:.2f} s against {TARGETS['p99_s']} — "
            + ("met" if r.p99_s < 1 else f"missed by {r.p99_s:.1f}×")
        )
    parts.append(
        f"lag zero {r.lag_zero_s} s after the load"
        if r.lag_zero_s is not None
        else "lag not back to zero within the drain timeout"
    )
    if r.database == "sqlite":
        locked = sum(r.database_locked.values())
        parts.append(
            f"{locked} `database is locked` lines — " + ("met" if not locked else "missed")
        )
    return "; ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The whole-suite case's options."""
    parser.add_argument("--seconds", type=int, default=300, help="the target: 5 minutes")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--drain-timeout", type=int, default=300, help="seconds to wait for zero lag"
    )
    parser.add_argument(
        "--windows",
        type=float,
        default=0,
        metavar="SECONDS",
        help="each process's and each service's backends' CPU a ticket, every SECONDS of the load",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy each service during the load into DIR"
    )
    parser.add_argument(
        "--stall-evaluation",
        metavar="AT:SECONDS",
        default=None,
        help="stop evaluation (SIGSTOP) AT seconds into the load for SECONDS, to make a backlog",
    )
    parser.add_argument(
        "--schema-prefix",
        default=SCHEMA_PREFIX,
        help="PostgreSQL: what the run's schemas' names begin with (default %(default)s)",
    )
    parser.add_argument(
        "--no-count-statements",
        dest="count_statements",
        action="store_false",
        help="PostgreSQL: do not count the statements each service sends (bench/statement_count)",
    )
    parser.add_argument(
        "--statement-cpu",
        action="store_true",
        help="PostgreSQL: each statement's backend CPU as well (two /proc reads a statement in "
        "every process: for finding where the backends' CPU goes, not for comparing runs)",
    )


@dataclass
class SuiteFailure:
    """A database whose case could not run to the end, and why (the other cases still run)."""

    database: str
    reason: str


# What can stop one database's case: the suite not starting or not routing the probe, wrk or a
# database read failing.
CASE_ERRORS = (
    RuntimeError,
    OSError,
    httpx.HTTPError,
    sqlite3.Error,
    asyncpg.PostgresError,
    subprocess.SubprocessError,
)


def run(args: argparse.Namespace) -> list[SuiteResult | SuiteFailure]:
    """Each database's case in turn; a failure is recorded and the next database still runs."""
    results: list[SuiteResult | SuiteFailure] = []
    ingredients = RESULTS / "suite" / "ingredients.tsv"
    ingredients.parent.mkdir(parents=True, exist_ok=True)
    write_ingredients(ingredients)
    for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
        if database not in ("sqlite", "postgres"):
            sys.exit(f"unknown database {database!r}: sqlite or postgres")
        try:
            results.append(run_case(database, args, ingredients))
        except CASE_ERRORS as exc:  # TimeoutError is an OSError
            print(f"whole suite on {database} not measured: {exc}", file=sys.stderr)
            results.append(SuiteFailure(database, f"{type(exc).__name__}: {exc}"))
    return results


def as_json(results: list[SuiteResult | SuiteFailure]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def postgres_url(value: str) -> str:
    """``--postgres`` as asyncpg connects to it: ``postgresql://...``. The services take that
    form or SQLAlchemy's ``postgresql+asyncpg://...`` (each is told the URL); the benchmark's own
    connections (row counts, the backends' CPU) are asyncpg's, which refuses the second."""
    if value.startswith("postgresql+asyncpg://"):
        return "postgresql://" + value.removeprefix("postgresql+asyncpg://")
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise argparse.ArgumentTypeError(
        f"not a PostgreSQL URL: {value!r} (postgresql://... or postgresql+asyncpg://...)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument(
        "--postgres",
        type=postgres_url,
        default=POSTGRES_URL,
        help="postgresql://... or postgresql+asyncpg://...",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "suite.json")
    args = parser.parse_args()
    require_wrk()
    results = run(args)
    print(render(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(as_json(results), indent=2, default=str))


if __name__ == "__main__":
    main()
