"""The repeat look-up's connections plan its statement once, so its generic plan must read each
key's own index whatever the statistics say: on a table where almost every ticket shares one
citizen and one address (analysed), a plan that walked the ``received_at`` index filtering by key
would read the whole window for any other citizen. The statement finds the same candidates as
the plain ``key = value`` form it replaced, for the common key and a rare one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from fengqiao import registry
from services.intake.models import TICKETS
from services.intake.repeat_lookup import _postgres_candidates
from services.intake.settings import IntakeSettings
from shared import db
from tests.support import Database

PER_KEY = 5
COMMON, RARE = "c" * 64, "r" * 64
NOW = datetime(2026, 5, 6, 12, tzinfo=UTC)


def _as_before(per_key: int) -> str:
    """The statement as it was before: each key an equality, the order the time alone."""
    return " UNION ALL ".join(
        f"SELECT {n} AS found_by, c.* FROM unnest(${n + 1}::varchar[]) AS k(v) CROSS JOIN LATERAL "
        f"(SELECT ticket_id FROM tickets WHERE {column} = k.v AND received_at >= $4 AND "
        f"received_at <= $5 ORDER BY received_at DESC LIMIT {per_key}) AS c"
        for n, column in enumerate(("citizen_hash", "grid_code", "address_key"))
    )


def _ticket(n: int, citizen: str, address: str) -> dict[str, Any]:
    return {
        "ticket_id": f"T{n:06d}",
        "channel": "web",
        "external_id": f"e{n}",
        "received_at": NOW - timedelta(minutes=n * 7),  # within the window, none tied
        "title": "t",
        "content": "c",
        "citizen_hash": citizen,
        "address_key": address,
        "category_code": "C01",
        "attachments": [],
        "extra": {},
    }


@pytest.mark.parametrize("slim", [False, True], ids=["full", "slim-citizens"])
async def test_the_look_ups_generic_plan_reads_the_key_indexes_on_skewed_data(
    database: Database, slim: bool
) -> None:
    if database.kind != "postgres":
        pytest.skip("plans are PostgreSQL's")
    # almost every ticket one citizen's at one address, none with a grid; a few of another's
    rows = [_ticket(n, COMMON, "common-address") for n in range(3000)]
    rows += [_ticket(n, RARE, "rare-address") for n in range(3000, 3004)]
    since, until = NOW - timedelta(days=30), NOW
    settings = IntakeSettings(**database.settings_for("intake_lookup_plan"))
    await registry.upgrade_async("intake", settings)
    engine = db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(TICKETS.insert(), rows)
            await conn.execute(text("ANALYZE tickets"))
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute("SET plan_cache_mode = force_generic_plan")
            await driver.execute(f"PREPARE look_up AS {_postgres_candidates(PER_KEY, slim)}")
            plan = "\n".join(
                r[0]
                for r in await driver.fetch(
                    f"EXPLAIN EXECUTE look_up('{{{RARE}}}', '{{}}', '{{rare-address}}', "
                    f"'{since.isoformat()}', '{until.isoformat()}')"
                )
            )
            await driver.execute("DEALLOCATE look_up")
            found: dict[str, list[tuple[Any, ...]]] = {}
            for keys in ([COMMON], [], ["common-address"]), ([RARE], [], ["rare-address"]):
                now_ = await driver.fetch(_postgres_candidates(PER_KEY, slim), *keys, since, until)
                before = await driver.fetch(_as_before(PER_KEY), *keys, since, until)
                found[keys[0][0]] = [(r[0], r[1]) for r in now_]
                assert found[keys[0][0]] == [(r[0], r[1]) for r in before]
            await driver.execute("RESET plan_cache_mode")
    finally:
        await engine.dispose()
    for index in (
        "ix_tickets_citizen_recent",
        "ix_tickets_grid_recent",
        "ix_tickets_address_recent",
    ):
        assert index in plan, plan
    assert "ix_tickets_received_at" not in plan, plan
    assert len(found[COMMON]) == 2 * PER_KEY and len(found[RARE]) == 2 * 4
