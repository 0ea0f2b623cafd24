"""``fengqiao evaluation …``: rebuild the projections from the topics, and emit the hot spots'
proactive-work proposals — against the database ``EVALUATION_DATABASE_URL`` names. Mounted as
``fengqiao evaluation`` through ``fengqiao/registry.py``.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.evaluation import hotspots
from services.evaluation.context import EvaluationContext
from services.evaluation.periods import resolve
from services.evaluation.rebuild import WORKERS
from services.evaluation.rebuild import rebuild as rebuild_projections
from services.evaluation.settings import EvaluationSettings
from shared import db
from shared.events.base import utcnow
from shared.workcalendar import to_shanghai

app = typer.Typer(help="Evaluation: rebuild the projections, emit proactive-work proposals.")
console = Console(stderr=True)


@app.command()
def rebuild(
    from_ledger: Annotated[
        bool,
        typer.Option(
            "--from-ledger", help="Keep the event ledger and refold every fact from it instead."
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Processes that fold the facts and sum the cells (1: all in this process).",
        ),
    ] = WORKERS,
) -> None:
    """Empty evaluation's projections and rebuild them from the intake, dispatch and mediation
    topics, from their first retained record (or refold them from the ledger)."""
    settings = EvaluationSettings()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} {task.fields[unit]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        source = "the ledger" if from_ledger else "the topics"
        read = bar.add_task(f"reading {source}", total=None, unit="records")
        fold = bar.add_task("folding the facts", total=None, unit="facts")

        def progress(stage: str, done: int, total: int | None) -> None:
            task = read if stage == "read" else fold
            bar.update(task, completed=done, total=total)

        report = asyncio.run(
            rebuild_projections(
                settings, progress=progress, from_ledger=from_ledger, workers=workers
            )
        )
    console.print(
        f"rebuilt from {report.records:,} records: {report.events:,} events folded into "
        f"{report.facts:,} facts and {report.cells:,} cells ({report.skipped} undecodable "
        f"skipped); read {report.seconds['read']} s, fold {report.seconds['fold']} s"
    )


@app.command()
def propose(
    on: Annotated[date | None, typer.Option(help="A day of the month to analyse.")] = None,
) -> None:
    """Find this month's hot spots and emit each new proactive-work proposal (once)."""
    settings = EvaluationSettings()

    async def main() -> int:
        engine = db.create_engine(settings)
        ctx = EvaluationContext(settings)
        try:
            period = resolve("month", on, None, None, to_shanghai(utcnow()).date())
            found = await hotspots.find(engine, period=period, settings=settings)
            async with db.session_factory(engine)() as session, session.begin():
                return await hotspots.propose(
                    session=session, outbox=ctx.outbox, found=found, now=utcnow()
                )
        finally:
            await engine.dispose()

    console.print(f"{asyncio.run(main())} proposals emitted")
