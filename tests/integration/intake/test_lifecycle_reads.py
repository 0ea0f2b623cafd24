"""A fetch of dispatch's events reads its tickets' dispatches on PostgreSQL by one index probe a
ticket, whatever the planner knows of the table: without statistics (autovacuum off, or a
surge before it analyses) ``ticket_id = ANY(...)`` with a fetch's tens of tickets was planned as
a scan of the whole ``ticket_dispatches`` table, at every fetch, a cost that grew with it."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import tracking
from services.intake.models import DISPATCHES
from services.intake.settings import IntakeSettings
from shared.events import dispatch as d
from tests.support import Database, never_analysed, scans_in_transaction

pytestmark = pytest.mark.postgres

STORED = 20_000  # dispatches of earlier tickets

FILL = text(
    "INSERT INTO ticket_dispatches (dispatch_id, ticket_id, department_code, state, updated_at) "
    "SELECT 'D-' || i, 'T-' || i, 'town-a', 'assigned', now() "
    "FROM generate_series(0, :n - 1) AS i"
)


def _assigned(ticket_id: str, dispatch_id: str) -> d.TicketAssigned:
    return d.TicketAssigned(
        ticket_id=ticket_id,
        dispatch_id=dispatch_id,
        department_code="town-b",
        department_tier="town",
        category_code="0102",
        channel="open311-public-api",
    )


async def test_a_fetch_s_dispatches_are_index_probes_without_statistics(
    database: Database,
) -> None:
    settings = IntakeSettings(**database.settings_for("intake_lifecycle_reads"))
    stored = never_analysed(database, settings, "intake", "ticket_dispatches", FILL, {"n": STORED})
    async with stored as engine:
        # A fetch: a second dispatch for 60 stored tickets, a first one for 20 new tickets.
        events = [_assigned(f"T-{i}", f"D-{i}-b") for i in range(0, 6_000, 100)]
        events += [_assigned(f"T-new-{i}", f"D-new-{i}") for i in range(20)]
        async with AsyncSession(engine) as session, session.begin():
            # The transaction open first: the fetch's statements (on the driver, outside any
            # transaction otherwise) are then the ones the transaction's counts below cover.
            await session.execute(text("SELECT 1"))
            applied = await tracking.apply_lifecycles(session=session, events=events)
            seq_scans, index_scans = await scans_in_transaction(session, "ticket_dispatches")
        assert sorted(applied) == sorted(str(e.event_id) for e in events)
        assert seq_scans == 0
        assert index_scans >= 1
        t = DISPATCHES.c
        among = select(t.dispatch_id, t.ticket_id).where(t.ticket_id.in_(["T-100", "T-new-3"]))
        async with AsyncSession(engine) as session:
            rows = dict((await session.execute(among)).all())
        assert rows == {"D-100": "T-100", "D-100-b": "T-100", "D-new-3": "T-new-3"}


async def test_a_fetch_s_read_is_not_compiled_however_large_the_table(database: Database) -> None:
    """The same missing statistics make the read's estimated cost grow with the table; past
    ``jit_above_cost`` every fetch's read was compiled before it ran (10 ms of a 12.5 ms read
    at 209,000 rows in the whole suite). The services' connections have JIT off."""
    settings = IntakeSettings(**database.settings_for("intake_lifecycle_jit"))
    stored = never_analysed(database, settings, "intake", "ticket_dispatches", FILL, {"n": 250_000})
    async with stored as engine, engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert await driver.fetchval("SHOW jit") == "off"
        tickets = [f"T-{i}" for i in range(100_000, 100_300)]
        named = [f"D-{i}" for i in range(100_000, 100_300)]
        plan = "\n".join(
            r[0]
            for r in await driver.fetch("EXPLAIN (ANALYZE) " + tracking._READ_PG, tickets, named)
        )
        cost = float(plan.split("..", 1)[1].split(" ", 1)[0])
        assert cost > 100_000  # the default jit_above_cost: it would have been compiled
        assert "JIT" not in plan, plan
