"""The ``fengqiao`` command: run the whole suite on its embedded default, or parts of it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.dispatch.cli import app as dispatch_cli
from shared.broker import EmbeddedBroker
from shared.bus import create_topics
from shared.settings import BusSettings, ServiceSettings

app = typer.Typer(help="Fengqiao: citizen-appeal hotline and one-stop mediation platform.")
app.add_typer(dispatch_cli, name="dispatch")
console = Console(stderr=True)

SERVICES = ("intake", "dispatch", "mediation", "evaluation")


def service_settings(name: str) -> ServiceSettings:
    """The settings class of a service, read from the environment."""
    module = __import__(f"services.{name}.settings", fromlist=["x"])
    cls = next(
        v
        for k, v in vars(module).items()
        if k.endswith("Settings")
        and isinstance(v, type)
        and issubclass(v, ServiceSettings)
        and v is not ServiceSettings
    )
    return cls()  # type: ignore[no-any-return]


@dataclass
class _Child:
    name: str
    port: int
    process: subprocess.Popen[bytes]


def _plan_environment(var_dir: Path, bootstrap: str) -> dict[str, str]:
    """Variables the children get: the broker, and a SQLite file each unless one was configured."""
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    for name in SERVICES:
        settings = service_settings(name)
        if "database_url" not in settings.model_fields_set:
            env[f"{name.upper()}_DATABASE_URL"] = f"sqlite+aiosqlite:///{var_dir / name}.db"
    return env


def _migrate_all(env: dict[str, str]) -> None:
    from shared.migrate import upgrade

    saved = dict(os.environ)
    os.environ.update(env)  # the settings classes read the children's environment
    try:
        for name in SERVICES:
            upgrade(name, service_settings(name))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _spawn(name: str, host: str, port: int, env: dict[str, str], log_dir: Path) -> _Child:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"services.{name}.app:create_app",
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
    return _Child(name, port, process)


def _wait_healthy(children: list[_Child], host: str, timeout: float = 30.0) -> None:
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


def _stop_children(children: list[_Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.process.wait(10)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address every server binds to.")] = "127.0.0.1",
    base_port: Annotated[
        int,
        typer.Option(
            help="intake, dispatch, mediation, evaluation get this port and the next three."
        ),
    ] = 8001,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded broker.")] = 9092,
    var_dir: Annotated[Path, typer.Option(help="Where SQLite files and logs go.")] = Path("var"),
) -> None:
    """Start the broker (unless KAFKA_BOOTSTRAP_SERVERS is set), migrate, and run all four services.

    Stops everything cleanly on Ctrl-C or SIGTERM.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    log_dir = var_dir / "log"
    log_dir.mkdir(exist_ok=True)
    bus = BusSettings()
    broker: EmbeddedBroker | None = None
    children: list[_Child] = []
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        if "kafka_bootstrap_servers" in bus.model_fields_set:
            bootstrap = bus.kafka_bootstrap_servers
            console.print(f"using external Kafka at [bold]{bootstrap}[/]")
        else:
            broker = EmbeddedBroker(
                port=broker_port, host="127.0.0.1", log_path=log_dir / "broker.log"
            )
            broker.start()
            bootstrap = broker.bootstrap
            console.print(f"embedded broker (tansu, memory) on [bold]{bootstrap}[/]")
        env = _plan_environment(var_dir.resolve(), bootstrap)
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        asyncio.run(create_topics(BusSettings()))
        _migrate_all(env)
        for index, name in enumerate(SERVICES):
            children.append(_spawn(name, host, base_port + index, env, log_dir))
        _wait_healthy(children, host)
        table = Table(title="Fengqiao is up")
        for column in ("service", "url", "docs", "log"):
            table.add_column(column)
        for child in children:
            url = f"http://{host}:{child.port}"
            table.add_row(child.name, url, f"{url}/docs", str(log_dir / f"{child.name}.log"))
        console.print(table)
        console.print("Ctrl-C stops everything.")
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    console.print(
                        f"[red]{child.name} exited ({child.process.returncode}); stopping[/]"
                    )
                    stopping = True
            if (
                broker is not None
                and broker.process is not None
                and broker.process.poll() is not None
            ):
                console.print("[red]the broker exited; stopping[/]")
                stopping = True
            time.sleep(0.2)
    finally:
        console.print("stopping…")
        _stop_children(children)
        if broker is not None:
            broker.stop()
        console.print("stopped.")


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1 only).")] = 9092,
) -> None:
    """Run only the embedded broker, in the foreground."""
    embedded = EmbeddedBroker(port=port).start()
    console.print(f"tansu on {embedded.bootstrap} (cluster {embedded.cluster_id}); Ctrl-C stops it")
    try:
        assert embedded.process is not None
        embedded.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


@app.command()
def migrate(
    service: Annotated[str | None, typer.Argument(help="One service; all when omitted.")] = None,
) -> None:
    """Run Alembic migrations to head for one or all services."""
    from shared.migrate import upgrade

    for name in [service] if service else SERVICES:
        if name not in SERVICES:
            raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
        upgrade(name, service_settings(name))
        console.print(f"{name}: at head")


@app.command()
def topics() -> None:
    """Create the bus topics on the configured broker."""
    asyncio.run(create_topics(BusSettings()))
    console.print("topics ready")


if __name__ == "__main__":
    app()
