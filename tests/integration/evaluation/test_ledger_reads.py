"""A fetch's ledger read on PostgreSQL probes the fact index once a key, whatever the planner
knows of the table: without statistics (autovacuum off, or a table not analysed yet) a read of
``fact_key = ANY(:keys)`` with a fetch's hundreds of keys was planned as a scan of the whole
ledger, at every fetch, a cost that grew with the ledger."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.evaluation import service
from services.evaluation.settings import EvaluationSettings
from tests.support import Database, never_analysed, scans_in_transaction

pytestmark = pytest.mark.postgres

FACTS = 20_000  # two events each: a ledger of 40,000 rows

FILL = text(
    "INSERT INTO eval_ledger (event_id, fact_key, event_type, occurred_at, payload) "
    "SELECT 'e' || i, 'T:' || (i / 2), 't' || (i % 2), now(), repeat('x', 900) "
    "FROM generate_series(0, :n - 1) AS i"
)


async def test_a_fetch_s_ledger_ids_are_index_probes_without_statistics(
    database: Database,
) -> None:
    settings = EvaluationSettings(**database.settings_for("evaluation_ledger_reads"))
    stored = never_analysed(database, settings, "evaluation", "eval_ledger", FILL, {"n": 2 * FACTS})
    async with stored as engine:
        keys = [f"T:{i}" for i in range(0, FACTS, FACTS // 400)] + ["T:absent"]
        async with AsyncSession(engine) as session, session.begin():
            held = await service.ledger_ids_of(session, keys)
            seq_scans, index_scans = await scans_in_transaction(session, "eval_ledger")
        assert {k: sorted(v) for k, v in held.items()} == {
            k: [(f"e{2 * int(k[2:])}", "t0"), (f"e{2 * int(k[2:]) + 1}", "t1")]
            for k in keys
            if k != "T:absent"
        }
        assert seq_scans == 0
        assert index_scans >= 1
