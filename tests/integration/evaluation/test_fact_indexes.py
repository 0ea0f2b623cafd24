"""The facts keep no index but their key (migration 0018_facts_key_alone): no read uses another,
each was an entry more for every fact written, and a ticket whose receipt and assignment come in
two fetches has its department rewritten — on PostgreSQL a heap-only update only if no index
holds the department."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from fengqiao import registry
from services.evaluation import service
from services.evaluation.context import evaluation_calendar
from services.evaluation.models import CaseFact, DispatchFact, TicketFact
from shared.migrate import alembic_config
from tests.integration.evaluation.committee_fixture import BH1, A, Script, sh
from tests.integration.evaluation.test_batch_apply import _evaluation
from tests.support import Database

FACTS = ("ticket_facts", "dispatch_facts", "case_facts")


async def _indexes(engine: Any) -> dict[str, list[str]]:
    """Each fact table's indexes (the primary key aside), by name."""
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: {t: inspect(sync).get_indexes(t) for t in FACTS})
    return {t: sorted(i["name"] for i in indexes) for t, indexes in found.items()}


async def test_the_facts_have_no_index_but_their_key(database: Database) -> None:
    for model in (TicketFact, DispatchFact, CaseFact):
        assert not model.__table__.indexes, model  # type: ignore[attr-defined]
    async with _evaluation(database, "evaluation_fact_indexes") as evaluation:
        assert await _indexes(evaluation.engine) == {table: [] for table in FACTS}
        # and back: the two indexes of before
        config = alembic_config(registry.SERVICES["evaluation"].migrations, evaluation.settings)
        await asyncio.to_thread(command.downgrade, config, "0017_outbox_pending")
        assert await _indexes(evaluation.engine) == {
            "ticket_facts": ["ix_ticket_facts_department_code"],
            "dispatch_facts": ["ix_dispatch_facts_ticket_id"],
            "case_facts": [],
        }
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await _indexes(evaluation.engine) == {table: [] for table in FACTS}


@pytest.mark.postgres
async def test_a_ticket_assigned_in_a_later_fetch_is_rewritten_on_its_page(
    database: Database,
) -> None:
    """Its receipt's fact holds no department; the assignment's fetch rewrites it with one, as
    a heap-only update (no new index entry). Ten tickets: their facts and the new versions fit
    on the half-filled page they were inserted on."""
    if database.kind != "postgres":
        pytest.skip("heap-only updates are PostgreSQL's")
    script = Script("HOT")
    for n in range(10):
        script.received(f"T{n}", sh(10, 12, 9, n), BH1)
    receipts = list(script.events)
    for n in range(10):
        script.assigned(f"T{n}", f"A{n}", A, sh(10, 12, 10, n))
    assignments = script.events[len(receipts) :]
    async with _evaluation(database, "evaluation_fact_rewrites") as evaluation:
        await evaluation.batch(receipts)
        async with evaluation.sessions() as session, session.begin():
            await service.record_many(
                session=session,
                events=assignments,
                calendar=evaluation_calendar(evaluation.settings),
            )
            updated, heap_only = (
                await session.execute(
                    text(
                        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                        "WHERE relid = CAST('ticket_facts' AS regclass)"
                    )
                )
            ).one()
    assert updated == 10
    assert heap_only == 10
