"""The embedded suite's processes: the four services as children, their environment and
databases planned, migrated, spawned, waited on and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from fengqiao import registry
from fengqiao.registry import SERVICES


@dataclass
class Child:
    name: str
    port: int
    process: subprocess.Popen[bytes]


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


def spawn(name: str, host: str, port: int, env: dict[str, str], log_dir: Path) -> Child:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
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
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return Child(name, port, process)


def wait_healthy(children: list[Child], host: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for child in children:
        while True:
            if child.process.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.process.returncode}; see its log"
                )
            try:
                if httpx.get(f"http://{host}:{child.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} not healthy after {timeout}s")
            time.sleep(0.1)


def stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.process.wait(10)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
