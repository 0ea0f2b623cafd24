"""A fetch's ledger read on PostgreSQL probes the fact index once a key, whatever the planner
knows of the table: without statistics (autovacuum off, or a table not analysed yet) a read of
``fact_key = ANY(:keys)`` with a fetch's hundreds of keys was planned as a scan of the whole
ledger, at every fetch, a cost that grew with the ledger."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from fengqiao import registry
from services.evaluation import service
from services.evaluation.settings import EvaluationSettings
from shared import db
from tests.support import Database

pytestmark = pytest.mark.postgres

FACTS = 20_000  # two events each: a ledger of 40,000 rows, never analysed

FILL = text(
    "INSERT INTO eval_ledger (event_id, fact_key, event_type, occurred_at, payload) "
    "SELECT 'e' || i, 'T:' || (i / 2), 't' || (i % 2), now(), repeat('x', 900) "
    "FROM generate_series(0, :n - 1) AS i"
)
SCANS = text(
    "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = 'eval_ledger'::regclass"
)


async def test_a_fetch_s_ledger_ids_are_index_probes_without_statistics(
    database: Database,
) -> None:
    if database.kind != "postgres":
        pytest.skip("the plans are PostgreSQL's")
    settings = EvaluationSettings(**database.settings_for("evaluation_ledger_reads"))
    await registry.upgrade_async("evaluation", settings)
    engine = db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            # no autovacuum's analyse in the middle of the test, whatever the server's setting
            await conn.execute(text("ALTER TABLE eval_ledger SET (autovacuum_enabled = false)"))
            await conn.execute(FILL, {"n": 2 * FACTS})
        keys = [f"T:{i}" for i in range(0, FACTS, FACTS // 400)] + ["T:absent"]
        async with AsyncSession(engine) as session, session.begin():
            assert await session.scalar(
                text("SELECT reltuples FROM pg_class WHERE oid = 'eval_ledger'::regclass")
            ) in (-1, 0)  # never analysed
            held = await service.ledger_ids_of(session, keys)
            seq_scans, index_scans = (await session.execute(SCANS)).one()
        assert {k: sorted(v) for k, v in held.items()} == {
            k: [(f"e{2 * int(k[2:])}", "t0"), (f"e{2 * int(k[2:]) + 1}", "t1")]
            for k in keys
            if k != "T:absent"
        }
        assert seq_scans == 0
        assert index_scans >= 1
    finally:
        await engine.dispose()
