"""Soak: post many tickets through the embedded suite (``fengqiao up``) while the supervisor
rotates the broker, and show that its memory stays bounded and nothing is lost or doubled.

    python -m bench.soak [--tickets 200000] [--concurrency 8] [--max-backlog 10000]
                         [--retention-minutes 5] [--rotate-rss-mb 256]
                         [--rotate-every-minutes 5] [--out bench/results/soak.json]

The load posts hotline tickets, each retried with its external id until acknowledged, and
holds back while evaluation trails by more than ``--max-backlog`` tickets: the run measures
the suite at the pace it sustains, and consumers stay well inside the outbox retention window
(which must exceed their lag, see docs/architecture.md "Supervision"). At the end it waits until
evaluation has counted every acknowledged ticket (or ``--drain-timeout``), then reports the peak
RSS of every process (the supervisor's own gauges, from each process's kernel high-water mark),
the broker rotations, and accepted / stored / counted / lost / duplicated from the databases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.embedded import (
    SERVICE_NAMES,
    Load,
    SuiteProcess,
    post_tickets,
    start_suite,
    tally,
    wait_counted,
)
from bench.intake import BATCH_CHANNEL, batch_template

ROTATION_LINE = re.compile(r"rotating the broker \((\w+); rss (\d+) MB\)")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-backlog", type=int, default=10_000)
    parser.add_argument("--retention-minutes", type=float, default=5.0)
    parser.add_argument("--rotate-rss-mb", type=float, default=256.0)
    parser.add_argument("--rotate-every-minutes", type=float, default=5.0)
    parser.add_argument(
        "--post-minutes",
        type=float,
        default=0,
        help="stop posting after this long even if fewer tickets went out (0: no limit)",
    )
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--chunk", type=int, default=1000, help="tickets posted between checks")
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=250,
        help="post CSV batch files of this many rows (the load costs the machine far less "
        "than one request a ticket); 0 posts single hotline tickets",
    )
    parser.add_argument("--var-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    return parser.parse_args()


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = {
        "LOG_LEVEL": "WARNING",
        "SUPERVISOR_SAMPLE_INTERVAL_S": "1",
        "SUPERVISOR_BROKER_ROTATE_RSS_MB": str(args.rotate_rss_mb),
        "SUPERVISOR_BROKER_ROTATE_EVERY_HOURS": str(args.rotate_every_minutes / 60),
        "SUPERVISOR_BROKER_ROTATE_MIN_GAP_S": "60",
    }
    for name in SERVICE_NAMES:
        env[f"{name.upper()}_OUTBOX_RETENTION_DAYS"] = str(args.retention_minutes / 1440)
    return env


async def _dispatched(client: httpx.AsyncClient) -> int:
    """Tickets evaluation counts as dispatched; -1 while it cannot say (busy, restarting)."""
    try:
        response = await client.get("/summary")
    except httpx.TransportError:
        return -1
    return int(response.json()["dispatched"]) if response.status_code == 200 else -1


class BatchPoster:
    """Posts tickets as CSV batch files (the grid patrol log channel), each retried whole until
    answered: a retried row is recognised by its external id and answered with its ticket."""

    def __init__(self, client: httpx.AsyncClient, template: Path) -> None:
        lines = template.read_text(encoding="utf-8").splitlines()
        self.header, self.rows = lines[0], [line.split(",", 1)[1] for line in lines[1:] if line]
        self.client = client

    async def post(self, load: Load, numbers: range) -> None:
        body = "\n".join(
            [self.header, *(f"{load.run}-{n},{self.rows[n % len(self.rows)]}" for n in numbers)]
        )
        delay = 0.1
        while True:
            try:
                response = await self.client.post(
                    f"/channels/{BATCH_CHANNEL}/tickets",
                    content=(body + "\n").encode(),
                    headers={"content-type": "text/csv; charset=utf-8"},
                )
                if response.status_code in (200, 201):
                    for row in response.json()["results"]:
                        load.accepted[row["external_id"]] = row["ticket_id"]
                    return
                if response.status_code < 500:
                    raise SystemExit(f"batch refused: {response.status_code} {response.text[:500]}")
                load.refusals[response.status_code] = load.refusals.get(response.status_code, 0) + 1
            except httpx.TransportError:
                pass
            load.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _hold_back(evaluation: httpx.AsyncClient, dispatched_at_least: int) -> None:
    """Wait (polling once a second) until evaluation has counted enough tickets dispatched."""
    while await _dispatched(evaluation) < dispatched_at_least:  # noqa: ASYNC110 - another process
        await asyncio.sleep(1.0)


async def _run(args: argparse.Namespace, suite: SuiteProcess) -> dict[str, Any]:
    load = Load(run=f"soak-{int(time.time())}")
    started = time.monotonic()
    last_report = 0.0
    async with (
        httpx.AsyncClient(base_url=suite.url("evaluation"), timeout=30) as evaluation,
        httpx.AsyncClient(
            base_url=suite.url("intake"),
            timeout=30,
            limits=httpx.Limits(max_connections=args.concurrency),
        ) as intake,
    ):
        batches = None
        if args.batch_rows:
            template = suite.var_dir / "batch-template.csv"
            batch_template(template, 1000)
            batches = BatchPoster(intake, template)
        for start in range(0, args.tickets, args.chunk):
            if args.post_minutes and time.monotonic() - started > args.post_minutes * 60:
                print(f"posting stopped after {args.post_minutes} min, at {start} tickets")
                break
            await _hold_back(evaluation, len(load.accepted) - args.max_backlog)
            numbers = range(start, min(start + args.chunk, args.tickets))
            if batches is None:
                await post_tickets(
                    suite.url("intake"), load, numbers, concurrency=args.concurrency, client=intake
                )
            else:
                step = args.batch_rows
                await asyncio.gather(
                    *(
                        batches.post(load, range(first, min(first + step, numbers.stop)))
                        for first in range(numbers.start, numbers.stop, step)
                    )
                )
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                metrics = suite.supervisor_metrics()
                broker_rss = metrics.get(("fengqiao_supervisor_process_rss_bytes", "broker"), 0)
                print(
                    f"{last_report - started:7.0f} s  accepted {len(load.accepted):>7}  "
                    f"dispatched {await _dispatched(evaluation):>7}  "
                    f"broker rss {broker_rss / 2**20:6.0f} MB  rotations {_rotations(metrics)}",
                    flush=True,
                )
    posted = time.monotonic()
    result = await wait_counted(suite, load, timeout=args.drain_timeout, interval=5.0)
    drained = time.monotonic()
    metrics = suite.supervisor_metrics()
    log = (suite.var_dir / "log" / "supervisor.log").read_text()
    return {
        "tickets": len(load.accepted),
        "settings": vars(args) | {"var_dir": str(suite.var_dir), "out": str(args.out)},
        "accepted": result.accepted,
        "stored": result.stored,
        "counted": result.counted,
        "lost": result.lost,
        "duplicated": result.duplicated,
        "client_retries": load.retries,
        "post_seconds": round(posted - started, 1),
        "drain_seconds": round(drained - posted, 1),
        "tickets_per_second": round(result.counted / (drained - started), 1),
        "peak_rss_mb": {
            name: round(
                metrics.get(("fengqiao_supervisor_process_peak_rss_bytes", name), 0) / 2**20
            )
            for name in ("broker", *SERVICE_NAMES, "supervisor")
        },
        "rotations": {
            reason: int(metrics.get(("fengqiao_supervisor_broker_rotations_total", reason), 0))
            for reason in ("memory", "schedule")
        },
        "broker_rss_mb_at_rotation": [int(m.group(2)) for m in ROTATION_LINE.finditer(log)],
        "restarts": {
            name: int(metrics.get(("fengqiao_supervisor_restarts_total", name), 0))
            for name in ("broker", *SERVICE_NAMES)
        },
        "final_tally": tally(suite.var_dir, load).line("final"),
    }


def _rotations(metrics: dict[tuple[str, str], float]) -> int:
    return int(
        sum(
            v
            for (name, _), v in metrics.items()
            if name == "fengqiao_supervisor_broker_rotations_total"
        )
    )


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so that a SIGTERM, too, stops the suite on the way out


def main() -> None:
    args = _arguments()
    signal.signal(signal.SIGTERM, _interrupt)
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="fengqiao-soak-")) / "var"
    suite = start_suite(var_dir, env=_environment(args))
    try:
        report = asyncio.run(_run(args, suite))
    finally:
        output = suite.stop()
    report["suite_exit"] = suite.process.returncode
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if report["lost"] or report["duplicated"]:
        print(output[-4000:])
        raise SystemExit("soak failed: tickets lost, doubled or not acknowledged")


if __name__ == "__main__":
    main()
