"""``fengqiao token issue``: a signed token for development and tests, under the configured key.

In a deployment the city's identity provider issues the tokens; this command signs with the
shared secret the services verify (``AUTH_TOKEN_SECRET``, the development default when unset),
with their issuer and audience, so ``curl -H "Authorization: Bearer $(fengqiao token issue …)"``
works against ``fengqiao up``.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.console import Console

from shared.auth import UNIT_ROLES, Role, mint_token
from shared.settings import DEV_TOKEN_SECRET, ServiceSettings

app = typer.Typer(help="Signed identity tokens for development.", no_args_is_help=True)
console = Console(stderr=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """Seconds from ``90``, ``90s``, ``15m``, ``8h`` or ``1d``; a clear error otherwise."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a lifetime such as 900, 15m, 8h or 1d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


@app.command()
def issue(
    role: Annotated[Role, typer.Option(help="The caller's role.")],
    subject: Annotated[str, typer.Option(help="Who the caller is (the token's sub).")],
    unit: Annotated[
        str | None,
        typer.Option(help="Department, grid or centre code (required for unit roles)."),
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds, or 15m, 8h, 1d.")] = "1h",
) -> None:
    """Print a token for ROLE / SUBJECT / UNIT signed with the configured shared secret."""
    if role in UNIT_ROLES and not unit:
        raise typer.BadParameter(f"role {role.value} needs --unit", param_hint="--unit")
    settings = ServiceSettings()
    secret = settings.token_secret()
    if secret is None:
        console.print(
            "[red]AUTH_TOKEN_SECRET is empty: tokens come from the identity provider here[/]"
        )
        raise typer.Exit(2)
    if secret == DEV_TOKEN_SECRET:
        console.print("[yellow]signed with the development secret: the embedded default only[/]")
    token = mint_token(
        secret,
        role=role.value,
        subject=subject,
        unit=unit,
        ttl_s=parse_ttl(ttl),
        issuer=settings.auth_token_issuer,
        audience=settings.auth_token_audience,
    )
    typer.echo(token)
