"""``fengqiao dispatch …``: load the organisation, check and activate routing rules, inspect the
working calendar, and route a ticket by hand — against the database ``DISPATCH_DATABASE_URL``
names. Mounted as ``fengqiao dispatch`` through ``fengqiao/registry.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.context import DispatchContext
from services.dispatch.organisation import admin, store
from services.dispatch.routing import TicketFacts, route
from services.dispatch.rules import load_rules
from services.dispatch.settings import DispatchSettings
from shared import db
from shared.datafiles import DataFileError
from shared.errors import DomainError
from shared.events.base import utcnow
from shared.workcalendar import CalendarError, build_calendar, load_overrides_file

app = typer.Typer(help="Dispatch: organisation, routing rules, working calendar.")
console = Console(stderr=True)
T = TypeVar("T")


def _run(work: Callable[[AsyncSession, DispatchContext], Awaitable[T]], *, write: bool) -> T:
    settings = DispatchSettings()

    async def main() -> T:
        engine = db.create_engine(settings)
        sessions = db.session_factory(engine)
        ctx = DispatchContext(settings)
        try:
            async with sessions() as session:
                if write:
                    async with session.begin():
                        return await work(session, ctx)
                return await work(session, ctx)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _refused(exc: Exception) -> typer.Exit:
    console.print(f"[red]{exc}[/]")
    for problem in getattr(exc, "problems", ()):
        console.print(f"  - {problem}")
    return typer.Exit(1)


@app.command("load-org")
def load_org(
    migrate: Annotated[bool, typer.Option(help="Migrate the database to head first.")] = True,
) -> None:
    """Load the demo city, its org chart and the packaged routing rules into an empty database
    (the service does the same on its first start)."""
    settings = DispatchSettings()
    if migrate:
        from shared.migrate import upgrade

        upgrade("services.dispatch.migrations", settings)

    async def work(session: AsyncSession, ctx: DispatchContext) -> Any:
        loaded = await store.load(session, outbox=ctx.outbox, profiles=ctx.profiles, now=utcnow())
        return loaded, await store.summary(session)

    loaded, summary = _run(work, write=True)
    if loaded is None:
        console.print(
            f"organisation already loaded: version {summary['version']} revision "
            f"{summary['revision']}; change it through the admin API (/departments)"
        )
    else:
        console.print(
            f"loaded organisation {loaded.version}: {loaded.areas} areas, "
            f"{loaded.departments} departments, routing rules {loaded.rules_version}"
        )
    table = Table(title="departments by tier")
    table.add_column("tier")
    table.add_column("areas", justify="right")
    table.add_column("departments", justify="right")
    for tier in ("city", "district", "town", "village", "grid"):
        table.add_row(
            tier,
            str(summary["areas_by_tier"].get(tier, 0)),
            str(summary["departments_by_tier"].get(tier, 0)),
        )
    console.print(table)


@app.command("check-rules")
def check_rules(path: Annotated[Path, typer.Argument(help="A routing rules YAML file.")]) -> None:
    """Validate a rules file against the loaded organisation; exit 1 naming every problem."""
    text = path.read_text(encoding="utf-8")

    async def work(session: AsyncSession, ctx: DispatchContext) -> Any:
        return load_rules(text, org=await ctx.org.chart(session), profiles=ctx.profiles)

    try:
        rules = _run(work, write=False)
    except DataFileError as exc:
        raise _refused(exc) from None
    console.print(f"ok: version {rules.version}, {len(rules.rules)} rules, digest {rules.digest}")


@app.command("activate-rules")
def activate_rules(
    path: Annotated[Path, typer.Argument(help="A routing rules YAML file.")],
    actor: Annotated[str, typer.Option(help="Who activates it, for the audit.")] = "cli",
) -> None:
    """Validate a rules file and make it the active version (refused whole on any problem)."""
    text = path.read_text(encoding="utf-8")

    async def work(session: AsyncSession, ctx: DispatchContext) -> Any:
        return await admin.activate_rules(session=session, ctx=ctx, text=text, actor=f"cli:{actor}")

    try:
        row, created = _run(work, write=True)
    except (DataFileError, DomainError) as exc:
        raise _refused(exc) from None
    verb = "activated" if created else "already active:"
    console.print(f"{verb} rules {row.version} (rule set {row.id}, digest {row.digest})")


@app.command("route")
def route_ticket(
    category: Annotated[str, typer.Option(help="Taxonomy code, e.g. 0204.")],
    channel: Annotated[str, typer.Option(help="Intake channel code.")] = "hotline-12345-phone",
    area: Annotated[str | None, typer.Option(help="Area or grid code.")] = None,
    text: Annotated[str, typer.Option(help="Title and content, for keyword rules.")] = "",
    enterprise: Annotated[bool, typer.Option(help="An enterprise appeal.")] = False,
    urgency: Annotated[str, typer.Option(help="normal | urgent | critical")] = "normal",
    repeat_count: Annotated[int, typer.Option(help="Earlier appeals on the matter.")] = 0,
) -> None:
    """Dry-run routing for a ticket with the active rules and print why."""
    facts = TicketFacts.model_validate(
        {
            "category": category,
            "channel": channel,
            "area_code": area,
            "text": text,
            "enterprise": enterprise,
            "urgency": urgency,
            "repeat_count": repeat_count,
        }
    )

    async def work(session: AsyncSession, ctx: DispatchContext) -> Any:
        active = await ctx.org.rules(session)
        return route(facts, active.rules, await ctx.org.chart(session))

    try:
        decision = _run(work, write=False)
    except KeyError as exc:
        raise _refused(exc) from None
    for trace in decision.explanation:
        console.print(
            f"  {trace.priority:>5} {trace.rule_id:<28} {trace.outcome:<13} {trace.reason}"
        )
    console.print(decision.summary)


@app.command("calendar")
def calendar(
    file: Annotated[
        Path | None, typer.Option(help="Overrides file (default: DISPATCH_CALENDAR_FILE).")
    ] = None,
    warn_days: Annotated[
        int, typer.Option(help="Exit 2 when the covered calendar ends within this many days.")
    ] = 60,
) -> None:
    """Show the working calendar's coverage; exit 2 when the fallback is near (for a cron)."""
    try:
        overrides = load_overrides_file(file or DispatchSettings().calendar_file)
    except CalendarError as exc:
        raise _refused(exc) from None
    cal = build_calendar(overrides)
    info = cal.describe()
    for key, value in info.items():
        console.print(f"{key:>24}: {value}")
    left = (date(cal.covered_through(), 12, 31) - utcnow().date()).days
    console.print(f"{'days covered from today':>24}: {left}")
    if left < warn_days:
        console.print(
            f"[yellow]the calendar ends in {left} days: enter the State Council's "
            f"{cal.covered_through() + 1} schedule in the overrides file[/]"
        )
        raise typer.Exit(2)
