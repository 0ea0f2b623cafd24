"""Writing a batch set-wise: the rows and events of many placements staged as plain drafts and
written with one insert per table at the end, instead of mapped instances flushed one by one.

The functions that create rows take a ``Writer``: a session (the row is a mapped instance,
added to it, as every single action does) or a ``Staged`` batch (the row is a ``Draft`` with
the same attributes, written by ``Staged.write``). Intake's tickets are routed a fetched batch at
a time through ``Staged``: constructing and flushing the mapped instances was ~40 % of it.
The events of a batch's placements are staged as their fields (``emit_fields``) and written
straight to their outbox records at the end, the ones of a class together, without a model
built and dumped for each (``encode_fields``; a test holds the records equal to the model's).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from typing import Any, TypeVar, cast

from sqlalchemy import Dialect, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import SQLModel

from shared import bulk
from shared.auth import acting_principal
from shared.bulk import Draft, draft_rows, insert_drafts
from shared.events.base import Encoded, Event, encode_fields, encoded, utcnow
from shared.groupcommit import DirectInserts
from shared.outbox import Outbox, audit_row, record_row

M = TypeVar("M", bound=SQLModel)


@dataclass(frozen=True, slots=True)
class _Fields:
    """An event staged as its fields (all but its id and time, in the model's order)."""

    cls: type[Event]
    fields: Mapping[str, Any]


class Staged:
    """The rows and events of a batch, in the order they were made."""

    def __init__(self) -> None:
        self.drafts: dict[type[SQLModel], list[Draft]] = defaultdict(list)
        self.events: list[Event | _Fields] = []

    async def write(self, session: AsyncSession, outbox: Outbox) -> None:
        """Every row and event of the batch: on PostgreSQL in one statement (an ``unnest``
        insert per table chained in data-modifying CTEs, as intake's group commit writes);
        elsewhere one insert per table, then the events in one outbox insert."""
        events = self._outbox_rows(outbox)
        conn = await session.connection()
        if conn.dialect.name == "postgresql" and await self._write_at_once(conn, events):
            return
        for model, drafts in self.drafts.items():
            await insert_drafts(session, drafts, model.__table__)  # type: ignore[attr-defined]
        for table, rows in events.items():
            await bulk.insert(session, table, rows)

    def _encoded(self) -> list[Encoded]:
        """The batch's events as records, in order: those staged as fields written straight
        from them, a class at a time (through the model if the writer declines them)."""
        out: list[Encoded | None] = [None] * len(self.events)
        staged: dict[type[Event], list[int]] = defaultdict(list)
        models: list[int] = []
        for at, event in enumerate(self.events):
            if isinstance(event, _Fields):
                staged[event.cls].append(at)
            else:
                models.append(at)
        for cls, places in staged.items():
            fields = [cast(_Fields, self.events[at]).fields for at in places]
            written = encode_fields(cls, fields)
            if written is None:
                written = encoded([cls.model_validate(f) for f in fields])
            for at, e in zip(places, written, strict=True):
                out[at] = e
        written = encoded([cast(Event, self.events[at]) for at in models])
        for at, e in zip(models, written, strict=True):
            out[at] = e
        return cast(list[Encoded], out)

    def _outbox_rows(self, outbox: Outbox) -> dict[Table, list[dict[str, Any]]]:
        """The outbox rows of the batch's events, and their audit rows (what ``Outbox.add``
        writes for the same events)."""
        if not self.events:
            return {}
        events = self._encoded()
        rows = {
            outbox.table: [
                record_row(
                    e.record, event_id=str(e.event_id), event_type=e.event_type, topic=e.topic
                )
                for e in events
            ]
        }
        if outbox.audit is not None:
            # An audit row reads an event's id, type, ticket id and time, which ``Encoded``
            # carries as the event does.
            actor, now = acting_principal(), utcnow()
            rows[outbox.audit] = [audit_row(cast(Event, e), actor, now=now) for e in events]
        return rows

    async def _write_at_once(
        self, conn: AsyncConnection, events: dict[Table, list[dict[str, Any]]]
    ) -> bool:
        """One round trip for the whole batch (a fetch of a few dozen tickets wrote eight
        statements, and their socket writes were a third of its CPU); False, having written
        nothing, when a table's rows cannot go that way."""
        direct = _direct_inserts(conn.dialect)
        count = sum(map(len, self.drafts.values())) + sum(map(len, events.values()))
        copies = self._copies(direct, events) if count >= direct.copy_min_rows else None
        if copies is not None:
            # As the group committer copies a large group, from the drafts' own values. In the
            # session's transaction, already open on the driver when the batch has read through
            # it, the copies are part of it: a savepoint of their own (two more round trips a
            # fetch) would undo nothing the session's rollback does not. Otherwise they get a
            # transaction of their own, as before.
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            if driver.is_in_transaction():
                await _copy(driver, copies)
            else:
                async with driver.transaction():
                    await _copy(driver, copies)
            return True
        rows: dict[Table, list[dict[str, Any]]] = {}
        for model, drafts in self.drafts.items():
            if drafts:
                rows[model.__table__] = draft_rows(drafts, model.__table__)  # type: ignore[attr-defined]
        rows.update(events)
        if not rows:
            return True
        plans = direct.group_plans(rows)
        if plans is None:
            return False
        # Part of the session's transaction if one is open on this connection; else (a fetch
        # of received tickets on PostgreSQL, read on the driver) the one statement commits
        # alone, all or nothing.
        raw = await conn.get_raw_connection()
        await direct.run(raw.driver_connection, plans, rows)
        return True

    def _copies(
        self, direct: DirectInserts, events: dict[Table, list[dict[str, Any]]]
    ) -> list[tuple[Any, list[tuple[Any, ...]]]] | None:
        """Each table's plan and its records for ``COPY``, read from the drafts' attributes
        (no dict of every column per row first, as ``draft_rows`` makes for an insert); None
        when a table's rows cannot go that way (the insert path then decides)."""
        out: list[tuple[Any, list[tuple[Any, ...]]]] = []
        for model, drafts in self.drafts.items():
            if not drafts:
                continue
            table: Table = model.__table__  # type: ignore[attr-defined]
            values = [d.__dict__ for d in drafts]
            keys = _columns(model, table)
            serial = table.autoincrement_column
            if serial is not None and serial.name in keys:
                numbered = [v.get(serial.name) is not None for v in values]
                if any(numbered) and not all(numbered):
                    return None  # some numbered, some left to the database: Core's way
                if not any(numbered):
                    keys = tuple(k for k in keys if k != serial.name)
            records = _records(direct.plan(table, keys), values)
            if records is None:
                return None
            out.append(records)
        for table, rows in events.items():
            records = _records(direct.plan(table, tuple(rows[0])), rows)
            if records is None:
                return None
            out.append(records)
        return out


async def _copy(driver: Any, copies: list[tuple[Any, list[tuple[Any, ...]]]]) -> None:
    """Each table's records copied on the asyncpg connection, in order."""
    for plan, records in copies:
        await driver.copy_records_to_table(
            plan.table.name, schema_name=plan.table.schema, columns=list(plan.keys), records=records
        )


def _columns(model: type[SQLModel], table: Table) -> tuple[str, ...]:
    """A model's columns, in its order (the columns ``Draft.model_dump`` gives)."""
    names = tuple(model.model_fields)
    return names if all(n in table.c for n in names) else ()


def _records(plan: Any, rows: list[dict[str, Any]]) -> tuple[Any, list[tuple[Any, ...]]] | None:
    """A table's rows as tuples in the plan's column order through its bind processors, a
    column at a time (a missing value is None, as ``Draft.model_dump`` has it); None without
    a plan."""
    if plan is None or not plan.keys:
        return None
    columns = []
    count = len(rows)
    for key, process in zip(plan.keys, plan.processors, strict=True):
        # ``dict.get`` mapped over the rows: the loop in C, not a comprehension's frame
        column = map(dict.get, rows, repeat(key, count))
        columns.append(column if process is None else map(process, column))
    return plan, list(zip(*columns, strict=True))


@cache
def _direct_inserts(dialect: Dialect) -> DirectInserts:
    return DirectInserts(dialect)


Writer = AsyncSession | Staged


def new_row(writer: Writer, model: type[M], **values: Any) -> M:
    """A new row of ``model``: a mapped instance added to the session, or a staged draft (which
    has the same attributes, and is what the caller reads and sets)."""
    if isinstance(writer, Staged):
        draft = Draft.of(model, values)
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


async def emit_fields(
    writer: Writer, outbox: Outbox, *events: tuple[type[Event], Mapping[str, Any]]
) -> None:
    """Events given as their class and fields (all but the id and time, in the model's order):
    staged as they are, to be written straight to their records with the batch, or validated
    and added to the outbox now."""
    if isinstance(writer, Staged):
        writer.events.extend(_Fields(cls, fields) for cls, fields in events)
    else:
        await outbox.add(writer, *(cls.model_validate(fields) for cls, fields in events))
