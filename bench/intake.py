"""Intake benchmark: the bare-FastAPI ceiling and intake's durable POST, measured in one run.

    python -m bench.intake [--seconds 15] [--warmup 5] [--connections 64] [--postgres URL]

Every server runs with 2 uvicorn workers (uvloop + httptools) on 127.0.0.1; the load comes from
wrk with a Lua script. wrk's own CPU time is reported, because on a 2-core machine the load
generator competes with the server. Results are printed as a Markdown table and saved as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import httpx

from shared.broker import EmbeddedBroker, free_port
from shared.bus import create_topics
from shared.settings import BusSettings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    wrk_cpu_share: float  # of one core, over the measured run
    stored: int | None = None  # rows found in the database afterwards (durability check)
    accepted: int = 0  # 2xx answers over warm-up and measured run together


def run_wrk(
    url: str, *, seconds: int, connections: int, threads: int = 2
) -> tuple[dict[str, int], float]:
    """Run wrk; return its JSON summary and its CPU share of one core."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(HERE / "post_ticket.lua"),
        url,
    ]
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


def start_server(
    args: list[str], env: dict[str, str], port: int, ready_path: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
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
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
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


def measure(name: str, url: str, args: argparse.Namespace) -> Result:
    warmup, _ = run_wrk(url, seconds=args.warmup, connections=args.connections)
    summary, cpu = run_wrk(url, seconds=args.seconds, connections=args.connections)
    accepted = sum(s["requests"] - s["non_2xx"] - s["errors"] for s in (warmup, summary))
    seconds = summary["duration_us"] / 1e6
    return Result(
        name=name,
        requests_per_s=round((summary["requests"] - summary["non_2xx"]) / seconds, 1),
        p50_ms=round(summary["p50_us"] / 1000, 2),
        p99_ms=round(summary["p99_us"] / 1000, 2),
        errors=summary["errors"],
        wrk_cpu_share=round(cpu, 2),
        accepted=accepted,
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


def bench_intake(
    name: str, db_env: dict[str, str], broker: EmbeddedBroker, args: argparse.Namespace
) -> Result:
    env = {
        **os.environ,
        **db_env,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC_PREFIX": "bench",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "shared.cli", "migrate", "intake"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = start_server(["--factory", "services.intake.app:create_app"], env, port, "/readyz")
    try:
        return measure(name, f"http://127.0.0.1:{port}/tickets", args)
    finally:
        stop_server(proc)


def render(results: list[Result], args: argparse.Namespace) -> str:
    """The results as a Markdown table, each case against the ceiling measured in the same run."""
    base = results[0].requests_per_s
    lines = [
        f"{args.connections} connections, {args.seconds} s measured after {args.warmup} s "
        "warm-up, 2 uvicorn workers each",
        "",
        "| case | req/s | vs ceiling | p50 ms | p99 ms | errors | wrk CPU (cores) "
        "| rows stored / 2xx answered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stored = "—" if r.stored is None else f"{r.stored} / {r.accepted}"
        lines.append(
            f"| {r.name} | {r.requests_per_s:,.0f} | {r.requests_per_s / base:.0%} | {r.p50_ms} "
            f"| {r.p99_ms} | {r.errors} | {r.wrk_cpu_share} | {stored} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "intake.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    results: list[Result] = []
    port = free_port()
    ceiling = start_server(["bench.ceiling_app:app"], dict(os.environ), port, "/openapi.json")
    try:
        results.append(
            measure(
                "ceiling: bare FastAPI, validate only", f"http://127.0.0.1:{port}/tickets", args
            )
        )
    finally:
        stop_server(ceiling)

    broker = EmbeddedBroker().start()
    asyncio.run(
        create_topics(
            BusSettings(kafka_bootstrap_servers=broker.bootstrap, kafka_topic_prefix="bench")
        )
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "intake.db"
            result = bench_intake(
                "intake durable POST, SQLite",
                {"INTAKE_DATABASE_URL": f"sqlite+aiosqlite:///{db}"},
                broker,
                args,
            )
            result.stored = count_sqlite(db)
            results.append(result)
        schema = f"bench_{int(time.time())}"
        try:
            result = bench_intake(
                "intake durable POST, PostgreSQL",
                {"INTAKE_DATABASE_URL": args.postgres, "INTAKE_DATABASE_SCHEMA": schema},
                broker,
                args,
            )
            result.stored = asyncio.run(count_postgres(args.postgres, schema))
            results.append(result)
        except (OSError, asyncpg.PostgresError, subprocess.CalledProcessError) as exc:
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        finally:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                asyncio.run(drop_schema(args.postgres, schema))
    finally:
        broker.stop()

    print(render(results, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
