"""The ``fengqiao`` command: run the whole suite on its embedded default, or parts of it."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import start_http_server
from rich.console import Console
from rich.table import Table

from fengqiao import audit, registry, supervisor, tokens
from fengqiao.registry import SERVICES
from shared.broker import EmbeddedBroker
from shared.bus import create_topics
from shared.settings import BusSettings, SupervisorSettings

app = typer.Typer(help="Fengqiao: citizen-appeal hotline and one-stop mediation platform.")
console = Console(stderr=True)

for _entry in SERVICES.values():
    _commands = _entry.load_commands()
    if _commands is not None:
        app.add_typer(_commands, name=_entry.name)
app.add_typer(tokens.app, name="token")
app.command()(audit.audit)


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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="The supervisor's Prometheus endpoint (restarts, rotations, memory); "
            "default: the port after evaluation's; 0 turns it off."
        ),
    ] = None,
    var_dir: Annotated[Path, typer.Option(help="Where SQLite files and logs go.")] = Path("var"),
) -> None:
    """Start the broker (unless KAFKA_BOOTSTRAP_SERVERS is set), migrate, and run all four services.

    A service that dies is restarted alone; so is the embedded broker, which is also rotated to
    bound its memory. Stops everything cleanly on Ctrl-C or SIGTERM.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    log_dir = var_dir / "log"
    log_dir.mkdir(exist_ok=True)
    _log_to(log_dir / "supervisor.log")
    bus = BusSettings()
    sup = supervisor.Supervisor(settings=SupervisorSettings(), run_dir=var_dir / "run")
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    metrics_server = None
    try:
        if "kafka_bootstrap_servers" in bus.model_fields_set:
            bootstrap = bus.kafka_bootstrap_servers
            console.print(f"using external Kafka at [bold]{bootstrap}[/]")
            embedded = None
        else:
            embedded = EmbeddedBroker(
                port=broker_port, host="127.0.0.1", log_path=log_dir / "broker.log"
            ).start()
            bootstrap = embedded.bootstrap
            console.print(f"embedded broker (tansu, memory) on [bold]{bootstrap}[/]")
            # Before the environment is planned: the services, the topics created below and
            # the broker's rotations all read it.
            os.environ.update(supervisor.embedded_defaults(bus))
        env = supervisor.plan_environment(var_dir.resolve(), bootstrap)
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        if embedded is not None:
            sup.add_broker(embedded, BusSettings())
        asyncio.run(create_topics(BusSettings()))
        supervisor.migrate_all(env)
        services = [
            sup.add(
                supervisor.Supervised(
                    name,
                    functools.partial(supervisor.spawn, name, host, port, env, log_dir),
                    port=port,
                )
            )
            for name, port in zip(
                SERVICES, range(base_port, base_port + len(SERVICES)), strict=True
            )
        ]
        supervisor.wait_healthy(services, host)
        port = base_port + len(SERVICES) if metrics_port is None else metrics_port
        if port:
            try:
                metrics_server, _ = start_http_server(
                    port, addr=host, registry=sup.metrics.registry
                )
            except OSError as exc:  # the suite runs without its supervisor's metrics
                console.print(f"[yellow]supervisor metrics not served on {port}: {exc}[/]")
                port = 0
        table = Table(title="Fengqiao is up")
        for column in ("service", "url", "docs", "log"):
            table.add_column(column)
        for entry in services:
            url = f"http://{host}:{entry.port}"
            table.add_row(entry.name, url, f"{url}/docs", str(log_dir / f"{entry.name}.log"))
        console.print(table)
        if port:
            console.print(f"supervisor metrics on http://{host}:{port}/metrics")
        console.print("Ctrl-C stops everything.")
        while not stopping.is_set():
            sup.tick()
            stopping.wait(0.2)
    finally:
        console.print("stopping…")
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        sup.stop()
        console.print("stopped.")


def _log_to(path: Path) -> None:
    """Supervisor events (restarts, rotations) go to stderr and to ``path``."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    logger = logging.getLogger("fengqiao.supervisor")
    logger.handlers.clear()
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(path)):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1 only).")] = 9092,
) -> None:
    """Run only the embedded broker, in the foreground, until Ctrl-C or SIGTERM."""
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    # tansu runs in a session of its own; without this a SIGTERM would end us and leave it
    # holding the port.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    embedded = EmbeddedBroker(port=port).start()
    console.print(f"tansu on {embedded.bootstrap} (cluster {embedded.cluster_id}); Ctrl-C stops it")
    try:
        assert embedded.process is not None
        while not stopping.is_set() and embedded.process.poll() is None:
            stopping.wait(0.2)
    finally:
        embedded.stop()


@app.command()
def migrate(
    service: Annotated[str | None, typer.Argument(help="One service; all when omitted.")] = None,
) -> None:
    """Run Alembic migrations to head for one or all services."""
    for name in [service] if service else SERVICES:
        if name not in SERVICES:
            raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
        registry.upgrade(name)
        console.print(f"{name}: at head")


@app.command()
def topics() -> None:
    """Create the bus topics on the configured broker."""
    asyncio.run(create_topics(BusSettings()))
    console.print("topics ready")


if __name__ == "__main__":
    app()
