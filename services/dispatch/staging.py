"""Writing a batch set-wise: the rows and events of many placements staged as plain drafts and
written with one insert per table at the end, instead of mapped instances flushed one by one.

The functions that create rows take a ``Writer``: a session (the row is a mapped instance,
added to it, as every single action does) or a ``Staged`` batch (the row is a ``Draft`` with
the same attributes, written by ``Staged.write``). Intake's tickets are routed a fetched batch at
a time through ``Staged``: constructing and flushing the mapped instances was ~40 % of it.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import Dialect, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import SQLModel

from shared.bulk import Draft, draft_rows, insert_drafts
from shared.events.base import Event
from shared.groupcommit import DirectInserts
from shared.outbox import Outbox, event_row

M = TypeVar("M", bound=SQLModel)


class Staged:
    """The rows and events of a batch, in the order they were made."""

    def __init__(self) -> None:
        self.drafts: dict[type[SQLModel], list[Draft]] = defaultdict(list)
        self.events: list[Event] = []

    async def write(self, session: AsyncSession, outbox: Outbox) -> None:
        """Every row and event of the batch: on PostgreSQL in one statement (an ``unnest``
        insert per table chained in data-modifying CTEs, as intake's group commit writes);
        elsewhere one insert per table, then the events in one outbox insert."""
        conn = await session.connection()
        if conn.dialect.name == "postgresql" and await self._write_at_once(conn, outbox):
            return
        for model, drafts in self.drafts.items():
            await insert_drafts(session, drafts, model.__table__)  # type: ignore[attr-defined]
        await outbox.add(session, *self.events)

    async def _write_at_once(self, conn: AsyncConnection, outbox: Outbox) -> bool:
        """One round trip for the whole batch (a fetch of a few dozen tickets wrote eight
        statements, and their socket writes were a third of its CPU); False, having written
        nothing, when a table's rows cannot go that way."""
        rows: dict[Table, list[dict[str, Any]]] = {}
        for model, drafts in self.drafts.items():
            if drafts:
                rows[model.__table__] = draft_rows(drafts, model.__table__)  # type: ignore[attr-defined]
        if self.events:
            rows[outbox.table] = [event_row(e) for e in self.events]
            if outbox.audit is not None:
                rows[outbox.audit] = outbox.audit_rows(self.events)
        if not rows:
            return True
        direct = _direct_inserts(conn.dialect)
        plans = direct.group_plans(rows)
        if plans is None:
            return False
        # The session's transaction is open on this connection (the batch has read through it),
        # so the statement is part of it.
        raw = await conn.get_raw_connection()
        await direct.run(raw.driver_connection, plans, rows)
        return True


@cache
def _direct_inserts(dialect: Dialect) -> DirectInserts:
    return DirectInserts(dialect)


Writer = AsyncSession | Staged


def new_row(writer: Writer, model: type[M], **values: Any) -> M:
    """A new row of ``model``: a mapped instance added to the session, or a staged draft (which
    has the same attributes, and is what the caller reads and sets)."""
    if isinstance(writer, Staged):
        draft = Draft(model, **values)
        writer.drafts[model].append(draft)
        return cast(M, draft)
    row = model(**values)
    writer.add(row)
    return row


async def emit(writer: Writer, outbox: Outbox, *events: Event) -> None:
    """Events in the writer's transaction: staged with the batch, or added to the outbox now."""
    if isinstance(writer, Staged):
        writer.events.extend(events)
    else:
        await outbox.add(writer, *events)
