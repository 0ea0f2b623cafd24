"""A fetch large enough to be copied rather than inserted (on PostgreSQL) stores every ticket's
rows and events as a small one does: its dispatch, clocks, audit action, outbox record and
audit-trail row, the assignment's record decoding to the dispatch's values."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from services.dispatch import placement, staging
from services.dispatch.models import Dispatch, DispatchAction, DispatchClock, outbox_table
from shared.events import decode
from shared.events.dispatch import TicketAssigned
from shared.events.intake import Location, TicketReceived
from shared.outbox import row_headers
from tests.integration.dispatch.support import DispatchEnv, running
from tests.support import Database

COUNT = 200  # six rows and more a ticket: past the group committer's threshold for COPY


@pytest.fixture(scope="module")
async def env(module_database: Database, broker: Any) -> AsyncIterator[DispatchEnv]:
    async with running(module_database, broker.bootstrap) as running_env:
        running_env.bus = False
        yield running_env


@pytest.mark.parametrize("count", [COUNT, 5])
async def test_a_fetch_stores_each_tickets_rows_and_events(
    env: DispatchEnv, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    # A large fetch is copied, a small one inserted in one statement (on PostgreSQL): both store
    # the same rows. The copies run in the session's transaction, without a savepoint of
    # their own.
    copied: list[bool] = []
    copies = staging.Staged._copies

    def spy(self: staging.Staged, *args: Any) -> Any:
        out = copies(self, *args)
        copied.append(out is not None)
        return out

    monkeypatch.setattr(staging.Staged, "_copies", spy)
    nested: list[object] = []
    transaction = asyncpg.Connection.transaction

    def spy_transaction(self: asyncpg.Connection, **kwargs: Any) -> Any:
        if self._top_xact is not None:  # a savepoint inside the session's transaction
            nested.append(kwargs)
        return transaction(self, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "transaction", spy_transaction)
    received = TicketReceived(
        ticket_id="T0000",
        channel="hotline-12345-phone",
        received_at=env.clock.now(),
        title="小区垃圾无人清运",
        content="楼下垃圾桶满了三天没人清运",
        category_code="0204",
        location=Location(grid_code=env.place()),
    )
    tickets = [
        received.model_copy(
            update={"ticket_id": f"T{n:04d}-{uuid.uuid4().hex[:8]}", "event_id": uuid.uuid4()}
        )
        for n in range(count)
    ]
    ids = [t.ticket_id for t in tickets]
    async with env.runtime.sessions() as session, session.begin():
        created = await placement.route_tickets(session=session, ctx=env.ctx, tickets=tickets)
    assert len(created) == count
    if env.settings.database_url.startswith("postgresql") and count == COUNT:
        assert copied == [True]
    assert nested == []

    async with env.runtime.sessions() as session:
        dispatches = {
            d.ticket_id: d
            for d in (
                await session.execute(select(Dispatch).where(Dispatch.ticket_id.in_(ids)))  # type: ignore[attr-defined]
            ).scalars()
        }
        assert dispatches.keys() == set(ids)
        by_dispatch = [d.dispatch_id for d in dispatches.values()]
        clocks = (
            await session.execute(
                select(DispatchClock).where(DispatchClock.dispatch_id.in_(by_dispatch))  # type: ignore[attr-defined]
            )
        ).scalars()
        due: dict[str, dict[str, Any]] = {}
        for c in clocks:
            due.setdefault(c.dispatch_id, {})[c.clock] = c.due_at
        actions = await session.execute(
            select(func.count(), func.count(func.distinct(DispatchAction.id))).where(
                DispatchAction.dispatch_id.in_(by_dispatch)  # type: ignore[attr-defined]
            )
        )
        assert tuple(actions.one()) == (count, count)
        rows = await session.execute(
            select(
                outbox_table.c.payload,
                outbox_table.c.headers,
                outbox_table.c.header_block,
                outbox_table.c.key,
            ).where(outbox_table.c.key.in_(ids))
        )
        assigned = [
            decode(payload, row_headers(headers, block), key.encode())
            for payload, headers, block, key in rows
        ]
    assert len(assigned) == count
    for event in assigned:
        assert isinstance(event, TicketAssigned)
        d = dispatches[event.ticket_id]
        assert (event.dispatch_id, event.department_code, event.rule_id) == (
            d.dispatch_id,
            d.department_code,
            d.rule_id,
        )
        assert event.deadlines == due[d.dispatch_id]
        assert {k: v.isoformat() for k, v in event.deadlines.items()} == d.deadlines
