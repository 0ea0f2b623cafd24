"""Fuzz every service's HTTP API with schemathesis: no generated request may get a 5xx.

Starts the embedded suite (``fengqiao up``) on free loopback ports in a scratch directory, runs
``schemathesis run`` against each service's OpenAPI document (coverage + fuzzing phases), stops
the suite by its PID and exits non-zero if any service failed. ``make fuzz``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shared.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("intake", "dispatch", "mediation", "evaluation")
BIN = Path(sys.executable).parent


def _wait_ready(ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ports)
    while pending and time.monotonic() < deadline:
        for port in list(pending):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    pending.discard(port)
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    if pending:
        raise SystemExit(f"services on ports {sorted(pending)} not ready after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--only", default=",".join(SERVICES), help="comma-separated services")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    base = free_port()
    while any(_taken(base + i) for i in range(4)):
        base = free_port()
    with tempfile.TemporaryDirectory(prefix="fengqiao-fuzz-") as scratch:
        up = subprocess.Popen(
            [
                str(BIN / "fengqiao"),
                "up",
                "--base-port",
                str(base),
                "--broker-port",
                str(free_port()),
                "--var-dir",
                scratch,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        failed: list[str] = []
        try:
            ports = {name: base + i for i, name in enumerate(SERVICES)}
            _wait_ready(list(ports.values()), timeout=60)
            for name in args.only.split(","):
                # A service's own settings (e.g. path parameters that reach real resources).
                config = ROOT / "fuzz" / f"{name}.toml"
                command = [
                    str(BIN / "schemathesis"),
                    *(["--config-file", str(config)] if config.exists() else []),
                    "run",
                    f"http://127.0.0.1:{ports[name]}/openapi.json",
                    "--checks",
                    "not_a_server_error",
                    "--phases",
                    "coverage,fuzzing",
                    "--max-examples",
                    str(args.max_examples),
                    "--workers",
                    "1",
                ]
                if args.seed is not None:
                    command += ["--seed", str(args.seed)]
                print(f"== {name}: {' '.join(command[command.index('run') :])}", flush=True)
                if subprocess.run(command, cwd=ROOT, env=os.environ.copy()).returncode != 0:
                    failed.append(name)
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                up.kill()
    print("fuzz: " + (f"5xx or errors in {', '.join(failed)}" if failed else "no server errors"))
    return 1 if failed else 0


def _taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


if __name__ == "__main__":
    raise SystemExit(main())
