"""``fengqiao audit TICKET_ID``: one ticket's audit trail across the running services.

Each service answers ``GET /admin/audit?ticket_id=`` from its own database (operators only);
this asks all of them at once and prints one timeline, oldest first. Services are found where
``fengqiao up`` puts them (the base port and the next three, in the registry's order) unless
``--url name=URL`` says otherwise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from fengqiao.registry import SERVICES
from shared.auth import Role, mint_token
from shared.settings import ServiceSettings

console = Console(stderr=True)


@dataclass
class Trail:
    """What the services answered: the merged rows and, per service, what went wrong."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def service_urls(host: str, base_port: int, overrides: list[str]) -> dict[str, str]:
    """Each service's base URL: ``fengqiao up``'s ports, then ``name=URL`` overrides."""
    urls = {name: f"http://{host}:{base_port + i}" for i, name in enumerate(SERVICES)}
    for item in overrides:
        name, sep, url = item.partition("=")
        if not sep or name not in SERVICES:
            known = ", ".join(SERVICES)
            raise typer.BadParameter(f"{item!r} is not name=URL with a name among {known}")
        urls[name] = url.rstrip("/")
    return urls


async def gather_trail(
    ticket_id: str, urls: dict[str, str], headers: dict[str, str], *, timeout: float = 10
) -> Trail:
    """Ask every service for the ticket's audit rows; merge them by time."""
    trail = Trail()

    async def one(client: httpx.AsyncClient, name: str, url: str) -> None:
        try:
            response = await client.get(f"{url}/admin/audit", params={"ticket_id": ticket_id})
        except httpx.HTTPError as exc:
            trail.failures[name] = f"unreachable at {url}: {type(exc).__name__}"
            return
        if response.status_code != 200:
            trail.failures[name] = f"{response.status_code}: {response.text[:200]}"
            return
        trail.rows.extend(response.json())

    async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
        await asyncio.gather(*(one(client, name, url) for name, url in urls.items()))
    trail.rows.sort(key=lambda r: (r["occurred_at"], r["recorded_at"], r["service"]))
    return trail


def operator_headers(token: str | None) -> dict[str, str]:
    """The given token, else a one-minute operator token under the configured shared secret
    (in the embedded default no credential is needed, but one is harmless)."""
    if token is None:
        settings = ServiceSettings()
        secret = settings.token_secret()
        if secret is None:
            return {}
        token = mint_token(
            secret,
            role=Role.OPERATOR.value,
            subject="fengqiao-audit",
            ttl_s=60,
            issuer=settings.auth_token_issuer,
            audience=settings.auth_token_audience,
        )
    return {"Authorization": f"Bearer {token}"}


def _actor(row: dict[str, Any]) -> str:
    unit = f"@{row['actor_unit']}" if row.get("actor_unit") else ""
    return f"{row['actor_role']}:{row['actor_subject']}{unit}"


def audit(
    ticket_id: Annotated[str, typer.Argument(help="The ticket whose trail to print.")],
    host: Annotated[str, typer.Option(help="Where the services listen.")] = "127.0.0.1",
    base_port: Annotated[int, typer.Option(help="As given to fengqiao up.")] = 8001,
    url: Annotated[
        list[str] | None, typer.Option(help="name=URL of a service elsewhere; repeatable.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="FENGQIAO_TOKEN", help="An operator's bearer token."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Print one ticket's audit trail, merged across the running services."""
    urls = service_urls(host, base_port, url or [])
    trail = asyncio.run(gather_trail(ticket_id, urls, operator_headers(token)))
    for name, reason in sorted(trail.failures.items()):
        console.print(f"[red]{name}: {reason}[/]")
    if as_json:
        typer.echo(orjson.dumps(trail.rows).decode())
    elif not trail.rows:
        console.print(f"no audit rows for ticket {ticket_id}")
    else:
        table = Table(title=f"Audit trail of {ticket_id}")
        for column in ("time", "service", "event", "actor", "event id"):
            table.add_column(column)
        for row in trail.rows:
            table.add_row(
                row["occurred_at"], row["service"], row["event_type"], _actor(row), row["event_id"]
            )
        Console().print(table)
    if trail.failures:
        raise typer.Exit(1)
