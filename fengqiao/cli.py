"""The ``fengqiao`` command: run the whole suite on its embedded default, or parts of it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fengqiao import audit, registry, supervisor, tokens
from fengqiao.registry import SERVICES
from shared.broker import EmbeddedBroker
from shared.bus import create_topics
from shared.settings import BusSettings

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
    children: list[supervisor.Child] = []
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
        env = supervisor.plan_environment(var_dir.resolve(), bootstrap)
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        asyncio.run(create_topics(BusSettings()))
        supervisor.migrate_all(env)
        for index, name in enumerate(SERVICES):
            children.append(supervisor.spawn(name, host, base_port + index, env, log_dir))
        supervisor.wait_healthy(children, host)
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
        supervisor.stop_children(children)
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
