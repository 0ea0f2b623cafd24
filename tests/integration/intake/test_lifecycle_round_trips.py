"""On PostgreSQL a fetch of dispatch's and mediation's events is two statements on the driver's
connection — its tickets' dispatches read, then the history steps, the dispatches and the tickets'
statuses written in one — with no transaction around them: the consumer writes no inbox rows
for these events, so BEGIN and COMMIT protected nothing that the one write does not do alone.
That write is all or nothing by itself: a step another transaction inserts meanwhile fails it
whole, and nothing of the fetch is kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from services.intake import tracking
from services.intake.models import DISPATCHES, HISTORY
from tests.integration.intake.support import IntakeEnv
from tests.integration.intake.test_lifecycle import open311_ticket, rows_of, story


def _postgres_only(env: IntakeEnv) -> None:
    if env.runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite writes a fetch in its one writer's transaction")


async def test_a_fetch_is_a_read_and_one_write_with_no_transaction(env: IntakeEnv) -> None:
    _postgres_only(env)
    start = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    alone, together = await open311_ticket(env), await open311_ticket(env)
    for event in story(alone, start):
        async with env.runtime.sessions() as session, session.begin():
            await tracking.apply_lifecycles(session=session, events=[event])
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    async with env.runtime.sessions() as session:
        async with session.begin():
            connection = await session.connection()
            driver: Any = (await connection.get_raw_connection()).driver_connection
            driver.add_query_logger(log)
            try:
                await tracking.apply_lifecycles(session=session, events=story(together, start))
                assert not driver.is_in_transaction()
            finally:
                await asyncio.sleep(0.1)  # the logger's calls are scheduled on the loop
            # The consumer's commit: nothing to send.
        await asyncio.sleep(0.1)
        driver.remove_query_logger(log)
    # A connection's first statements also bring the driver's look-up of their types (once a
    # connection): only the statements about the lifecycle's tables, and no transaction.
    kinds = [" ".join(q.split())[:18] for q in sent if "ticket_" in q]
    assert kinds == ["SELECT d.dispatch_", "WITH seen AS (SELE"]
    assert not [q for q in sent if q.split()[0].upper() in ("BEGIN", "COMMIT", "SAVEPOINT")]
    # The same rows as applying each event alone, in its own transaction.
    assert await rows_of(env, together) == await rows_of(env, alone)


async def test_a_step_inserted_meanwhile_fails_the_whole_write(env: IntakeEnv) -> None:
    _postgres_only(env)
    start = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    ticket_id = await open311_ticket(env)
    first, second = story(ticket_id, start)[:2]
    async with env.runtime.engine.connect() as other:
        await other.execute(
            HISTORY.insert().values(
                ticket_id=ticket_id,
                event_id=str(second.event_id),
                event_type=second.event_type,
                occurred_at=second.occurred_at,
                status="in_progress",
            )
        )

        async def apply() -> list[str]:
            async with env.runtime.sessions() as session, session.begin():
                return await tracking.apply_lifecycles(session=session, events=[first, second])

        # The fetch sees no step of its events, and waits on the other's at the unique key.
        applying = asyncio.ensure_future(apply())
        await asyncio.sleep(1.0)
        assert not applying.done()
        await other.commit()
        with pytest.raises(Exception, match="ticket_history"):
            await applying
    async with env.runtime.engine.connect() as conn:
        steps = (
            await conn.execute(select(HISTORY.c.event_id).where(HISTORY.c.ticket_id == ticket_id))
        ).scalars()
        dispatches = (
            await conn.execute(
                select(DISPATCHES.c.dispatch_id).where(DISPATCHES.c.ticket_id == ticket_id)
            )
        ).all()
    assert list(steps) == [str(second.event_id)]  # the other's only: none of the fetch's
    assert dispatches == []
