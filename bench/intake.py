"""Intake benchmark: the bare-FastAPI ceilings and intake's durable paths, measured in one run.

    python -m bench.intake [--seconds 20] [--batch-seconds 40] [--warmup 5] [--connections 64]
                           [--batch-connections 32] [--batch-rows 1000]
                           [--only ceiling,single-sqlite,...] [--profile DIR]
                           [--postgres URL] [--rounds 1] [--settle-seconds 0]

Cases (``--only`` picks some): ``ceiling`` (bare FastAPI validating one ticket), ``single-sqlite``
and ``single-postgres`` (intake's durable ``POST /tickets``: stored with its event before the
answer), ``batch-ceiling`` (bare FastAPI parsing a CSV file and validating each row),
``batch-sqlite`` and ``batch-postgres`` (intake's ``POST /channels/grid-patrol-batch/tickets``
with a 1,000-row CSV file: every row normalized, stored and its event written before the
answer).

Every server runs with 2 uvicorn workers (uvloop + httptools) on 127.0.0.1, each accepting on a
listening socket of its own (``fengqiao.serve``: SO_REUSEPORT, so the kernel spreads wrk's
connections over the workers; ``--shared-socket`` runs ``uvicorn --workers 2`` instead); the
load comes from wrk with a Lua script; wrk's own CPU time is reported, because on a 2-core
machine the load generator competes with the server. After each intake case the rows in the
database are counted against the 2xx answers (a durability check). ``--profile DIR`` samples
the server processes with py-spy during the measured run and writes where the time goes to
``DIR/<case>.txt``.
``--rounds N`` runs the ceiling and the single posts N times in a row (ceiling, SQLite,
PostgreSQL each round; the batches once after): each post is compared with its own round's
ceiling, and the round whose share is the median is the one of record. ``--settle-seconds S``
starts every case with a PostgreSQL ``CHECKPOINT`` and a wait of up to S seconds for a quiet
machine (what it found is printed under the table).
Each server process's peak RSS is read before it stops. Results are printed as a Markdown table
and saved as JSON; ``make bench`` (``bench/run.py``) runs these cases with the others.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import csv
import io
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import httpx

from shared.broker import EmbeddedBroker, free_port
from shared.bus import create_topics
from shared.settings import BusSettings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH_CHANNEL = "grid-patrol-batch"
ALL_CASES = (
    "ceiling",
    "single-sqlite",
    "single-postgres",
    "batch-ceiling",
    "batch-sqlite",
    "batch-postgres",
)


@dataclass
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # wrk's: socket errors, timeouts and non-2xx answers together
    wrk_cpu_share: float  # of one core, over the measured run
    items_per_request: int = 1
    connections: int = 0
    stored: int | None = None  # rows found in the database afterwards (durability check)
    accepted: int = 0  # items answered 2xx over warm-up and measured run together
    server_cpu_share: float | None = None  # server processes, of one core, measured run
    worker_cpu_shares: list[float] = field(default_factory=list)  # the two busiest processes
    machine_cpu_busy: float | None = None  # cores busy on the whole machine (server + DB + wrk)
    profile: dict[str, float] = field(default_factory=dict)
    non_2xx: int = 0
    timeouts: int = 0  # no answer within wrk's --timeout (10 s; 60 s for batch files)
    server_rss_mb: list[float] = field(default_factory=list)  # peak RSS of each server process
    # CPU seconds over the measured run: the server's processes, and (PostgreSQL) the backends
    # serving their connections.
    server_cpu_s: float | None = None
    database_cpu_s: float | None = None
    answered: int = 0  # 2xx answers over the measured run
    # Each worker's group commits since it started (warm-up included): (groups, units).
    groups: list[tuple[int, int]] = field(default_factory=list)
    round: int = 1  # which of ``--rounds`` (the ceiling and the single posts are repeated)
    settled: str = ""  # the machine before the case: what ``settle`` waited for and found

    def errors_text(self) -> str:
        if not self.errors:
            return "0"
        other = self.errors - self.non_2xx - self.timeouts
        counts = ((self.non_2xx, "non-2xx"), (self.timeouts, "timeouts"), (other, "socket"))
        kinds = [f"{n} {kind}" for n, kind in counts if n]
        return f"{self.errors} ({', '.join(kinds)})"

    @property
    def items_per_s(self) -> float:
        return self.requests_per_s * self.items_per_request

    def cpu_ms_text(self) -> str:
        """Server (+ PostgreSQL backends') CPU milliseconds a 2xx answer, over the measured run."""
        if not self.answered or self.server_cpu_s is None:
            return "—"
        text = f"{self.server_cpu_s / self.answered * 1e3:.3f}"
        if self.database_cpu_s is not None:
            text += f" + {self.database_cpu_s / self.answered * 1e3:.3f}"
        return text

    def groups_text(self) -> str:
        """Each worker's mean units a group commit."""
        return " · ".join(f"{u / g:.1f}" for g, u in self.groups if g) or "—"


# --- load generation ---------------------------------------------------------------------------


def run_wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    script: str,
    script_args: tuple[str, ...] = (),
    threads: int = 2,
    timeout_s: int = 10,
) -> tuple[dict[str, int], float]:
    """Run wrk with ``wrk_common.lua`` and then ``script``; return its JSON summary and its CPU
    share of one core."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", encoding="utf-8") as combined:
        combined.write((HERE / "wrk_common.lua").read_text(encoding="utf-8") + "\n")
        combined.write((HERE / script).read_text(encoding="utf-8"))
        combined.flush()
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={timeout_s}s",
            "--latency",
            "-s",
            combined.name,
            url,
        ]
        if script_args:
            cmd += ["--", *script_args]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    match = re.search(r"WRK_RESULT (\{.*\})", output)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{output}")
    return json.loads(match.group(1)), (usage.ru_utime + usage.ru_stime) / wall


# Appeals of the demo city: (category code, title, text with {place} and {n}).
PROBLEMS: tuple[tuple[str, str, str], ...] = (
    (
        "0102",
        "路灯不亮",
        "{place}附近的路灯已经坏了{n}天，晚上老人孩子出行很不方便，希望尽快修复。",
    ),
    (
        "0101",
        "人行道破损",
        "{place}门口人行道地砖松动翘起{n}块，下雨天踩上去溅水，有老人差点摔倒。",
    ),
    ("0104", "雨后积水", "{place}旁边道路每次下雨都积水，最深处没过脚踝，已经持续{n}天。"),
    ("0203", "夜间噪音扰民", "{place}楼下烧烤店每晚营业到凌晨{n}点，噪音很大，影响休息。"),
    ("0204", "垃圾未及时清运", "{place}的垃圾桶已经{n}天没人清运，气味很大，招来很多苍蝇。"),
    ("0304", "车辆乱停放", "{place}路口长期停着{n}辆私家车，占用消防通道，行人只能绕行。"),
    ("0107", "物业不作为", "{place}小区电梯坏了{n}天物业一直没有修，老人上下楼很困难。"),
    ("0103", "小区停水", "{place}从早上开始停水已经{n}个小时，没有任何通知，请尽快恢复供水。"),
)


def demo_places() -> list[str]:
    """Real addresses of the demo city, one per grid with a road, so grids resolve."""
    from shared import geo

    places = []
    for area in geo.areas().values():
        if area.tier is geo.Tier.GRID and area.roads and area.parent:
            seg = area.roads[0]
            village = geo.area(area.parent)
            places.append(f"{village.address_prefix}{seg.road_zh}{seg.first_number}号")
    return places


def batch_template(path: Path, rows: int, *, seed: int = 12345, places: int | None = None) -> None:
    """A CSV batch file in the grid patrol log's columns: real addresses of the demo city (so
    grids resolve), varied texts, categories given, a distinct citizen per row. Each data line
    starts with the row's part of the external id; wrk prepends a per-request prefix.
    ``places``: the rows spread over the first this many addresses only (1: a patrol's log of
    its own grid), instead of all of them."""
    rng = random.Random(seed)
    addresses = demo_places()[:places]
    names = ["张", "王", "李", "赵", "陈", "刘", "杨", "黄", "周", "吴"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["外部编号", "诉求人", "联系电话", "标题", "内容", "地址", "分类编码", "巡查员"]
    )
    for i in range(rows):
        code, title, text = rng.choice(PROBLEMS)
        place = rng.choice(addresses)
        writer.writerow(
            [
                f"{i:05d}",
                rng.choice(names) + rng.choice(["先生", "女士", "阿姨", "师傅"]),
                f"1{rng.choice('3589')}{rng.randrange(10**9):09d}",
                title,
                text.format(place=place[-8:], n=rng.randrange(2, 9)),
                place,
                code,
                f"网格员{rng.randrange(1, 60):02d}",
            ]
        )
    path.write_text(buffer.getvalue(), encoding="utf-8")


# --- servers -------------------------------------------------------------------------------------


RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# A PostgreSQL deployment refuses the development secrets; a benchmark run makes its own.
DEPLOYMENT_SECRETS = {
    "AUTH_TOKEN_SECRET": secrets.token_hex(32),
    "INTAKE_CITIZEN_HASH_SALT": secrets.token_hex(32),
}


def spawn_logged(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server in its own session (so it can be stopped as a group), output to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_server(
    args: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    log_name: str,
    *,
    shared_socket: bool = False,
) -> subprocess.Popen[bytes]:
    """2 uvicorn workers, each on a listening socket of its own (``fengqiao.serve``), or with
    ``shared_socket`` on uvicorn's one; warnings and errors go to ``bench/results/logs/<name>.log``.
    """
    proc = spawn_logged(
        [
            sys.executable,
            "-m",
            "uvicorn" if shared_socket else "fengqiao.serve",
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
        LOGS / f"{log_name}.log",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise TimeoutError(f"server {args} not ready")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's workers)."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            pids += [int(c) for c in children]
            frontier += [int(c) for c in children]
    return pids


def socket_ports(pids: list[int]) -> set[int]:
    """Local TCP ports of these processes' sockets (their database connections among them)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def database_backends(url: str, ports: set[int]) -> list[int]:
    """PIDs of the PostgreSQL backends serving connections from these local ports."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", sorted(ports)
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


def group_commits(base: str, tries: int = 16) -> list[tuple[int, int]]:
    """(groups, units) of the group commits of each worker that answered ``/metrics``: each
    scrape on a new connection, so uvicorn's workers each answer some; after the load, so the
    counts no longer move and a worker is told apart by its own."""
    seen: set[tuple[int, int]] = set()
    for _ in range(tries):
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(f"{base}/metrics", timeout=5).text
            found = dict(
                re.findall(r"^fengqiao_group_commit_units_(count|sum) ([0-9.e+]+)$", text, re.M)
            )
            if "count" in found and "sum" in found:
                seen.add((int(float(found["count"])), int(float(found["sum"]))))
    return sorted(seen)


def machine_times() -> tuple[float, float]:
    """The whole machine's busy CPU seconds so far (all cores; steal included) and, of them,
    those the hypervisor gave to others (steal), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / tick, fields[7] / tick


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    return machine_times()[0]


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    """Each live process's peak resident set size so far (VmHWM), in MB."""
    peaks: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = round(int(line.split()[1]) / 1024, 1)  # kB
    return peaks


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds used so far, by process."""
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return used


@contextlib.contextmanager
def sampled(
    server: subprocess.Popen[bytes], name: str, seconds: int, profile_dir: Path | None
) -> Iterator[dict[str, float]]:
    """Measure the server's CPU over the block; with a directory, py-spy it too."""
    out: dict[str, float] = {}
    pids = process_tree(server.pid)
    spy = None
    raw = None
    if profile_dir is not None and shutil.which(str(Path(sys.executable).parent / "py-spy")):
        profile_dir.mkdir(parents=True, exist_ok=True)
        raw = profile_dir / f"{name}.raw"
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                "200",
                "--format",
                "raw",
                "--duration",
                str(seconds),
                "-o",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    cpu_before, wall_before = cpu_seconds(pids), time.monotonic()
    machine_before = machine_busy()
    try:
        yield out
    finally:
        wall = time.monotonic() - wall_before
        cpu_after = cpu_seconds(pids)
        shares = {pid: (cpu_after[pid] - cpu_before.get(pid, 0.0)) / wall for pid in cpu_after}
        out["cpu"] = round(sum(shares.values()), 2)
        out["cpu_s"] = sum(cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after)
        out["machine"] = round(
            (machine_busy() - machine_before) / wall, 2
        )  # cores busy: server, database, wrk and all
        # The busiest processes (uvicorn's workers; the master idles): shows an uneven split.
        for n, share in enumerate(sorted(shares.values(), reverse=True)[:2]):
            out[f"cpu:worker{n + 1}"] = round(share, 2)
        for n, rss in enumerate(sorted(peak_rss_mb(pids).values(), reverse=True)):
            out[f"rss:{n}"] = rss
        if spy is not None:
            spy.wait(60)
            assert raw is not None and profile_dir is not None
            if raw.exists():
                summary = summarize_profile(raw.read_text())
                (profile_dir / f"{name}.txt").write_text(render_profile(name, summary))
                out.update({f"profile:{k}": v for k, v in summary["areas"].items()})
                raw.unlink()  # megabytes of stacks; the summary is what is kept


# --- profiles ------------------------------------------------------------------------------------

# Where intake's time goes: each sample goes to the first area whose marker appears anywhere in
# its stack, so specific areas come first and "HTTP" is what is left of request handling. py-spy
# names a frame "function (path:line)", without the class: markers are file paths.
AREAS: tuple[tuple[str, str], ...] = (
    ("event encode (CloudEvents) + outbox rows", "shared/events/base.py"),
    ("outbox relay (select, send, mark)", "shared/outbox.py"),
    ("inbox consumer", "shared/inbox.py"),
    ("group commit: inserts + commit", "shared/groupcommit.py"),
    ("group commit: inserts + commit", "shared/db.py"),
    ("repeat detection (shingles, match)", "services/intake/repeats.py"),
    ("repeat look-up (SQL, candidates)", "services/intake/repeat_lookup.py"),
    ("batch adapter (CSV → drafts)", "services/intake/adapters/"),
    ("normalize: PII, grid, category", "services/intake/normalize.py"),
    ("pipeline: numbering, rows, event", "services/intake/pipeline.py"),
    ("pipeline: numbering, rows, event", "services/intake/groups.py"),
    ("canonical JSON parse + validate", "shared/fastjson.py"),
    ("database driver, elsewhere", "sqlalchemy/"),
    ("database driver, elsewhere", "asyncpg/"),
    ("database driver, elsewhere", "aiosqlite/"),
    ("intake routes and service (pydantic, responses)", "services/intake/"),
    ("Kafka client", "aiokafka/"),
    ("HTTP: uvicorn / starlette / fastapi", "uvicorn/"),
    ("HTTP: uvicorn / starlette / fastapi", "starlette/"),
    ("HTTP: uvicorn / starlette / fastapi", "fastapi/"),
)


def summarize_profile(raw: str) -> dict[str, dict[str, float]]:
    """Shares of samples by area (inclusive, first match) and the top self-time frames."""
    areas: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(f.startswith("process ") and "idle" in f for f in frames[:1]):
            continue
        total += count
        leaves[frames[-1]] += count
        for label, marker in AREAS:
            if any(marker in f for f in frames):
                areas[label] += count
                break
        else:
            areas["other (event loop, idle polling, runtime)"] += count
    share = {k: round(v / total, 3) for k, v in areas.most_common()} if total else {}
    top = {k: round(v / total, 3) for k, v in leaves.most_common(25)} if total else {}
    return {"areas": share, "top": top}


def render_profile(name: str, summary: dict[str, dict[str, float]]) -> str:
    lines = [f"py-spy profile of {name} (share of samples, all server processes)", ""]
    lines += [f"{v:6.1%}  {k}" for k, v in summary["areas"].items()]
    lines += ["", "top frames by self time:"]
    lines += [f"{v:6.1%}  {k}" for k, v in summary["top"].items()]
    return "\n".join(lines) + "\n"


# --- cases ---------------------------------------------------------------------------------------


def measure(
    name: str,
    url: str,
    args: argparse.Namespace,
    server: subprocess.Popen[bytes],
    *,
    batch_template_path: Path | None = None,
    script: str | None = None,
    script_args: tuple[str, ...] = (),
    after_warmup: Callable[[], object] | None = None,
    database: str | None = None,
) -> Result:
    """Warm up, then measure one case with wrk; another ``script`` posts other bodies, and
    ``after_warmup`` is called between the two runs. With ``database`` (a local PostgreSQL's
    URL), the CPU of the backends serving the server's connections is measured too."""
    batch = batch_template_path is not None
    if script is None:
        script = "post_batch.lua" if batch else "post_ticket.lua"
        script_args = (str(batch_template_path),) if batch else ()
    connections = args.batch_connections if batch else args.connections
    items = args.batch_rows if batch else 1
    run = dict(
        connections=connections,
        script=script,
        script_args=script_args,
        timeout_s=60 if batch else 10,
    )
    seconds = args.batch_seconds if batch else args.seconds
    warmup, _ = run_wrk(url, seconds=args.warmup, **run)  # type: ignore[arg-type]
    if after_warmup is not None:
        after_warmup()
    key = _slug(name)
    backends: list[int] = []
    if database is not None:
        backends = asyncio.run(database_backends(database, socket_ports(process_tree(server.pid))))
    backends_before = cpu_seconds(backends)
    with sampled(server, key, seconds, args.profile) as usage:
        summary, cpu = run_wrk(url, seconds=seconds, **run)  # type: ignore[arg-type]
    database_cpu_s = None
    if database is not None:
        ports = socket_ports(process_tree(server.pid))
        backends_after = cpu_seconds([*backends, *asyncio.run(database_backends(database, ports))])
        database_cpu_s = sum(t - backends_before.get(pid, 0.0) for pid, t in backends_after.items())
    # wrk's "requests" are the answered ones; "non_2xx" the answered with another status.
    accepted = sum(s["requests"] - s["non_2xx"] for s in (warmup, summary)) * items
    measured = summary["duration_us"] / 1e6
    return Result(
        name=name,
        requests_per_s=round((summary["requests"] - summary["non_2xx"]) / measured, 2),
        p50_ms=round(summary["p50_us"] / 1000, 2),
        p99_ms=round(summary["p99_us"] / 1000, 2),
        errors=summary["errors"],
        non_2xx=summary["non_2xx"],
        timeouts=summary.get("timeouts", 0),
        wrk_cpu_share=round(cpu, 2),
        items_per_request=items,
        connections=connections,
        accepted=accepted,
        server_cpu_share=usage.get("cpu"),
        machine_cpu_busy=usage.get("machine"),
        worker_cpu_shares=[v for k, v in usage.items() if k.startswith("cpu:worker")],
        server_rss_mb=[v for k, v in usage.items() if k.startswith("rss:")],
        server_cpu_s=usage.get("cpu_s"),
        database_cpu_s=database_cpu_s,
        answered=summary["requests"] - summary["non_2xx"],
        profile={
            k.removeprefix("profile:"): v for k, v in usage.items() if k.startswith("profile:")
        },
    )


def count_sqlite(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM tickets").fetchone()[0])


async def count_postgres(url: str, schema: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".tickets'))
    finally:
        await conn.close()


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def bench_intake(
    name: str,
    db_env: dict[str, str],
    broker: EmbeddedBroker,
    args: argparse.Namespace,
    *,
    batch_template_path: Path | None = None,
) -> Result:
    env = {
        **os.environ,
        **db_env,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC_PREFIX": "bench",
        "LOG_LEVEL": "WARNING",
        # 64 connections from one address measure the ceiling, not a channel's fair share.
        "INTAKE_PUBLIC_RATE_LIMIT": "",
    }
    subprocess.run(
        [sys.executable, "-m", "fengqiao.cli", "migrate", "intake"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = start_server(
        ["--factory", "services.intake.app:create_app"],
        env,
        port,
        "/readyz",
        _slug(name),
        shared_socket=args.shared_socket,
    )
    path = f"/channels/{BATCH_CHANNEL}/tickets" if batch_template_path else "/tickets"
    postgres = env["INTAKE_DATABASE_URL"].startswith("postgresql")
    try:
        result = measure(
            name,
            f"http://127.0.0.1:{port}{path}",
            args,
            proc,
            batch_template_path=batch_template_path,
            database=args.postgres if postgres else None,
        )
        result.groups = group_commits(f"http://127.0.0.1:{port}")
        return result
    finally:
        stop_server(proc)


def bench_ceiling(name: str, path: str, args: argparse.Namespace, template: Path | None) -> Result:
    port = free_port()
    server = start_server(
        ["bench.ceiling_app:app"],
        dict(os.environ),
        port,
        "/openapi.json",
        _slug(name),
        shared_socket=args.shared_socket,
    )
    try:
        return measure(
            name, f"http://127.0.0.1:{port}{path}", args, server, batch_template_path=template
        )
    finally:
        stop_server(server)


def bench_database_cases(
    kind: str,
    label: str,
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    template: Path | None,
    results: list[Result],
) -> None:
    """One intake case (single or batch) on SQLite or PostgreSQL, with its durability check."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "intake.db"
            result = bench_intake(
                f"{label}, SQLite",
                {"INTAKE_DATABASE_URL": f"sqlite+aiosqlite:///{db}"},
                broker,
                args,
                batch_template_path=template,
            )
            result.stored = count_sqlite(db)
            results.append(result)
        return
    schema = f"{args.schema_prefix}_{int(time.time())}"
    try:
        result = bench_intake(
            f"{label}, PostgreSQL",
            {
                "INTAKE_DATABASE_URL": args.postgres,
                "INTAKE_DATABASE_SCHEMA": schema,
                **DEPLOYMENT_SECRETS,
            },
            broker,
            args,
            batch_template_path=template,
        )
        result.stored = asyncio.run(count_postgres(args.postgres, schema))
        results.append(result)
    except (OSError, asyncpg.PostgresError, subprocess.CalledProcessError) as exc:
        print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
    finally:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            asyncio.run(drop_schema(args.postgres, schema))


async def checkpoint(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def settle(args: argparse.Namespace, *, quiet_cores: float = 0.3, window_s: float = 3.0) -> str:
    """Start a measurement on a quiet machine: a PostgreSQL ``CHECKPOINT`` (the previous case's
    or a neighbour's dirty pages written now, not during the measured run, and the first write
    of each page after it logging the whole page then rather than in the run), then wait until
    the whole machine was busy less than ``quiet_cores`` over ``window_s``, at most
    ``args.settle_seconds``. Returns what it found, for the table."""
    if args.settle_seconds <= 0:
        return ""
    started = time.monotonic()
    note = []
    try:
        asyncio.run(checkpoint(args.postgres))
        note.append(f"checkpoint {time.monotonic() - started:.1f} s")
    except (OSError, asyncpg.PostgresError) as exc:
        note.append(f"no checkpoint ({type(exc).__name__})")
    busy = float("inf")
    while time.monotonic() - started < args.settle_seconds:
        before = machine_busy()
        time.sleep(window_s)
        busy = (machine_busy() - before) / window_s
        if busy < quiet_cores:
            break
    waited = time.monotonic() - started
    quiet = "quiet" if busy < quiet_cores else f"not quiet after {args.settle_seconds} s"
    note.append(f"{quiet}: {busy:.2f} cores busy, {waited:.0f} s")
    return ", ".join(note)


def ceiling_of(results: list[Result], r: Result) -> Result | None:
    """The ceiling a case is compared with: same kind (single or batch) and same round."""
    prefix = "batch ceiling" if r.items_per_request > 1 else "ceiling"
    return next(
        (c for c in results if c.name.startswith(prefix) and c.round == r.round),
        None,
    )


def share_of_ceiling(results: list[Result], r: Result) -> float | None:
    ceiling = ceiling_of(results, r)
    return r.items_per_s / ceiling.items_per_s if ceiling and ceiling.items_per_s else None


def of_record(results: list[Result], name: str) -> tuple[Result | None, list[float]]:
    """With ``--rounds`` > 1 a case has a result each round: the one of record is the round
    whose share of its own round's ceiling is the median (the lower middle one for an even
    count); returned with every round's share, in round order."""
    rounds = [r for r in results if r.name == name]
    shares = [share_of_ceiling(results, r) for r in rounds]
    ranked = sorted((s, r.round, r) for s, r in zip(shares, rounds, strict=True) if s is not None)
    if not ranked:
        return (rounds[0] if rounds else None), []
    return ranked[(len(ranked) - 1) // 2][2], [s for s in shares if s is not None]


def missed_by(measured: float, target: float) -> str:
    """A rate against its target: "met", or by what factor it falls short."""
    if measured >= target:
        return "met"
    return f"missed by {target / measured:.1f}×" if measured > 0 else "missed"


def render(results: list[Result], args: argparse.Namespace) -> str:
    """The results as a Markdown table, each case against its ceiling measured in the same run."""
    rounds = max((r.round for r in results), default=1)
    lines = [
        f"{args.seconds} s measured ({args.batch_seconds} s for batches) after {args.warmup} s "
        f"warm-up, 2 uvicorn workers each; single posts at {args.connections} connections, "
        f"{args.batch_rows}-row files at {args.batch_connections}"
        + (
            f"; the ceiling and the single posts in {rounds} rounds, each post against its own "
            "round's ceiling"
            if rounds > 1
            else ""
        ),
        "",
        "| case | conns | req/s | items/s | vs ceiling | p50 ms | p99 ms | errors "
        "| server CPU (cores; busiest two) | wrk CPU | machine busy "
        "| rows stored / items answered 2xx | peak RSS MB (each process) "
        "| CPU ms a request (server + PostgreSQL) | units a group commit (each worker) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        share = share_of_ceiling(results, r)
        ratio = f"{share:.0%}" if share is not None else "—"
        stored = "—" if r.stored is None else f"{r.stored} / {r.accepted}"
        name = f"{r.name} (round {r.round})" if rounds > 1 and r.items_per_request == 1 else r.name
        lines.append(
            f"| {name} | {r.connections} | {r.requests_per_s:,.1f} | {r.items_per_s:,.0f} "
            f"| {ratio} | {r.p50_ms} | {r.p99_ms} | {r.errors_text()} "
            f"| {r.server_cpu_share} ({' + '.join(str(c) for c in r.worker_cpu_shares)}) "
            f"| {r.wrk_cpu_share} | {r.machine_cpu_busy} | {stored} "
            f"| {' + '.join(f'{m:.0f}' for m in r.server_rss_mb)} "
            f"| {r.cpu_ms_text()} | {r.groups_text()} |"
        )
    settled = [f"{r.name} (round {r.round}): {r.settled}" for r in results if r.settled]
    if settled:
        lines += ["", "Before each case (`settle`): " + "; ".join(settled) + "."]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The intake cases' options (``make bench`` takes the same)."""
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--batch-seconds", type=int, default=40, help="batch cases: a file takes seconds"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=32)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--only", default=",".join(ALL_CASES))
    parser.add_argument("--profile", type=Path, default=None, help="py-spy into this directory")
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument(
        "--shared-socket",
        action="store_true",
        help="uvicorn --workers 2 (one listening socket) instead of fengqiao.serve's one a worker",
    )
    parser.add_argument(
        "--schema-prefix", default="bench", help="the prefix of the scratch schema's name"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the ceiling and the single posts this many times in a row (ceiling, SQLite, "
        "PostgreSQL each round); the round of record is the median share",
    )
    parser.add_argument(
        "--settle-seconds",
        type=int,
        default=0,
        help="before each case: CHECKPOINT, then wait up to this long for a quiet machine",
    )


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")


def run_cases(args: argparse.Namespace) -> list[Result]:
    """Run the chosen intake cases (``args.only``), the ceilings among them, in one run."""
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        sys.exit(f"unknown cases {sorted(unknown)}; choose from {', '.join(ALL_CASES)}")

    results: list[Result] = []

    def case(run: Callable[[], None], round_: int = 1) -> None:
        """Settle the machine, run one case (it appends its result), mark it with its round."""
        settled = settle(args)
        before = len(results)
        run()
        for r in results[before:]:
            r.round, r.settled = round_, settled

    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "batch.csv"
        batch_template(template, args.batch_rows)
        broker = EmbeddedBroker().start()
        asyncio.run(
            create_topics(
                BusSettings(kafka_bootstrap_servers=broker.bootstrap, kafka_topic_prefix="bench")
            )
        )
        try:
            for round_ in range(1, max(args.rounds, 1) + 1):
                if "ceiling" in cases:
                    case(
                        lambda: results.append(
                            bench_ceiling(
                                "ceiling: bare FastAPI, validate only", "/tickets", args, None
                            )
                        ),
                        round_,
                    )
                for kind in ("sqlite", "postgres"):
                    if f"single-{kind}" in cases:
                        case(
                            lambda kind=kind: bench_database_cases(
                                kind, "intake durable POST /tickets", args, broker, None, results
                            ),
                            round_,
                        )
            if "batch-ceiling" in cases:
                case(
                    lambda: results.append(
                        bench_ceiling(
                            "batch ceiling: bare FastAPI, parse + validate rows",
                            "/batch",
                            args,
                            template,
                        )
                    )
                )
            for kind in ("sqlite", "postgres"):
                if f"batch-{kind}" in cases:
                    case(
                        lambda kind=kind: bench_database_cases(
                            kind,
                            f"intake batch CSV ({args.batch_rows} rows)",
                            args,
                            broker,
                            template,
                            results,
                        )
                    )
        finally:
            broker.stop()
    return results


def as_json(results: list[Result]) -> list[dict[str, object]]:
    return [{**asdict(r), "items_per_s": r.items_per_s} for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS / "intake.json")
    args = parser.parse_args()
    require_wrk()
    results = run_cases(args)
    print(render(results, args))
    for r in results:
        if r.profile:
            print(f"\n{r.name}: " + ", ".join(f"{k} {v:.0%}" for k, v in r.profile.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(as_json(results), indent=2))


if __name__ == "__main__":
    main()
