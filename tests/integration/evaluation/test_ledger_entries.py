"""The stored ledger holds no appeal text, no citizen and no address, and a fact refolded from
it later (its events no longer in the process's memory) is the fact its events give."""

from __future__ import annotations

from sqlalchemy import select

from services.evaluation import service
from services.evaluation.models import ledger_table
from services.evaluation.rebuild import rebuild
from shared.events.intake import Citizen, Location
from tests.integration.evaluation.support import assigned, feedback, received
from tests.integration.evaluation.test_batch_apply import _evaluation, _fold
from tests.integration.evaluation.test_rebuild import dump
from tests.support import Database

PHONE = "139****0001"
ADDRESS = "越城区塔山街道环山路8号"


async def test_a_refold_from_the_stored_ledger_gives_the_facts_of_the_events(
    database: Database,
) -> None:
    first = received("TLEDGER1").model_copy(
        update={
            "citizen": Citizen(display_name="李**", phone_masked=PHONE, citizen_hash="c" * 64),
            "location": Location(address=ADDRESS, grid_code="330602001001001"),
        }
    )
    events = [first, assigned("TLEDGER1", "D-WATER")]
    later = [feedback("TLEDGER1", 1, resolved=True, satisfaction="satisfied")]
    expected = await _fold(database, "evaluation_ledger_whole", [[*events, *later]])

    async with _evaluation(database, "evaluation_ledger_later") as evaluation:
        await evaluation.batch(events)
        service.DECODED = service.DecodedEvents()  # as after a restart: nothing decoded in memory
        try:
            await evaluation.batch(later)
        finally:
            service.DECODED = service.DecodedEvents()
        stored = await dump(evaluation.engine)
        async with evaluation.engine.connect() as conn:
            entry = (
                await conn.execute(
                    select(ledger_table.c.payload).where(
                        ledger_table.c.event_id == str(first.event_id)
                    )
                )
            ).scalar_one()
    assert first.content and first.content not in entry
    assert first.title not in entry and PHONE not in entry and "李**" not in entry
    assert ADDRESS not in entry and "330602001001001" in entry
    for name in ("ticket_facts", "dispatch_facts", "eval_cells"):
        assert stored[name] == expected[name], name
    assert stored["ticket_facts"]


async def test_a_rebuild_from_the_stored_ledger_gives_the_live_facts(database: Database) -> None:
    events = [
        received("TLEDGER2"),
        assigned("TLEDGER2", "D-WATER"),
        feedback("TLEDGER2", 1, resolved=False, satisfaction="dissatisfied"),
    ]
    async with _evaluation(database, "evaluation_ledger_rebuilt") as evaluation:
        await evaluation.batch(events)
        live = await dump(evaluation.engine)
        service.DECODED = service.DecodedEvents()
        await rebuild(evaluation.settings, engine=evaluation.engine, from_ledger=True, workers=1)
        rebuilt = await dump(evaluation.engine)
    assert live["ticket_facts"]
    for name in ("ticket_facts", "dispatch_facts", "eval_cells"):
        assert rebuilt[name] == live[name], name
