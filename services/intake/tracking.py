"""Following each ticket's life through dispatch's and mediation's events: the dispatch states,
the history steps and the status the hotline and Open311 show (intake's event handlers call it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import lifecycle
from services.intake.models import (
    DISPATCHES,
    HISTORY,
    TICKETS,
)
from shared import bulk
from shared.bulk import OnConflict
from shared.events.base import Event

log = logging.getLogger(__name__)


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]

# What a fetch writes of each table on PostgreSQL, in this order (the statement's parameters).
_HISTORY_COLUMNS = (
    "ticket_id",
    "event_id",
    "event_type",
    "occurred_at",
    "dispatch_id",
    "department_code",
    "note",
    "status",
)
_DISPATCH_COLUMNS = tuple(c.name for c in DISPATCHES.columns)
# ``time_limit_profile`` NULL: the ticket keeps its own (no event of the fetch named one).
_TICKET_COLUMNS = (
    "ticket_id",
    "status",
    "status_at",
    "department_code",
    "due_at",
    "time_limit_profile",
)
_DATETIMES = frozenset({"occurred_at", "due_at", "updated_at", "status_at"})


def _unnest(table: Table, columns: Sequence[str], first: int) -> str:
    """``unnest`` of one array parameter a column (``$first`` on), each cast to the column's
    type as ``shared.bulk`` casts its arrays (so values are stored as they were before)."""
    return "unnest({})".format(
        ", ".join(
            f"CAST(${first + i} AS {table.c[name].type.compile(dialect=_PG)}[])"
            for i, name in enumerate(columns)
        )
    )


def _driver_sql() -> tuple[str, str]:
    """PostgreSQL's read and write of a fetch, run on the driver's connection (see
    ``_apply_pg``). The write is one statement: the history steps, the dispatches upserted,
    the tickets' statuses — each part only if none of the fetch's events has a history step
    already (a probe of the unique event id a step, as the read probes by ticket); it answers
    how many had one. A step another transaction inserts meanwhile makes the insert fail on the
    unique key, and so the whole statement: all of a fetch is written, or nothing.

    A fetch's dispatches are read by one index probe a ticket (a lateral subquery that is not
    flattened, ``OFFSET 0``, runs once a key), and the ones its changes name by one probe of
    the primary key each; the steps the same way by event id. As ``ticket_id = ANY(...)`` the
    read was planned as a scan of the whole table at every fetch wherever the table has no
    statistics (a server without autovacuum, or a surge before it analyses): each element's
    default selectivity times a fetch's tickets came to much of the table (1.47 M rows read by
    159 fetches in a one-minute suite run that stored 20,000 tickets)."""
    columns = ", ".join(f"d.{c}" for c in _DISPATCH_COLUMNS)
    read = " UNION ALL ".join(
        f"SELECT {columns} FROM unnest(CAST(${n} AS VARCHAR[])) AS k(v) CROSS JOIN LATERAL "
        f"(SELECT * FROM {DISPATCHES.name} WHERE {column} = k.v OFFSET 0) AS d"
        for n, column in ((1, "ticket_id"), (2, "dispatch_id"))
    )
    h, d = len(_HISTORY_COLUMNS), len(_DISPATCH_COLUMNS)
    event_ids = _HISTORY_COLUMNS.index("event_id") + 1
    event_id_type = HISTORY.c.event_id.type.compile(dialect=_PG)
    none_seen = "(SELECT n FROM seen) = 0"
    updates = ", ".join(f"{c} = excluded.{c}" for c in _DISPATCH_COLUMNS if c != "dispatch_id")
    ticket_sets = ", ".join(
        f"{c} = coalesce(v.{c}, t.{c})" if c == "time_limit_profile" else f"{c} = v.{c}"
        for c in _TICKET_COLUMNS[1:]
    )
    write = (
        f"WITH seen AS (SELECT count(*) AS n FROM unnest(CAST(${event_ids} AS {event_id_type}[])) "
        "AS k(v) "
        f"CROSS JOIN LATERAL (SELECT 1 FROM {HISTORY.name} WHERE event_id = k.v OFFSET 0) AS s), "
        f"steps AS (INSERT INTO {HISTORY.name} ({', '.join(_HISTORY_COLUMNS)}) "
        f"SELECT * FROM {_unnest(HISTORY, _HISTORY_COLUMNS, 1)} WHERE {none_seen}), "
        f"states AS (INSERT INTO {DISPATCHES.name} ({', '.join(_DISPATCH_COLUMNS)}) "
        f"SELECT * FROM {_unnest(DISPATCHES, _DISPATCH_COLUMNS, h + 1)} WHERE {none_seen} "
        f"ON CONFLICT (dispatch_id) DO UPDATE SET {updates}), "
        f"statuses AS (UPDATE {TICKETS.name} AS t SET {ticket_sets} "
        f"FROM {_unnest(TICKETS, _TICKET_COLUMNS, h + d + 1)} AS v({', '.join(_TICKET_COLUMNS)}) "
        f"WHERE t.ticket_id = v.ticket_id AND {none_seen}) "
        "SELECT n FROM seen"
    )
    return read, write


_READ_PG, _WRITE_PG = _driver_sql()


class Redelivered(Exception):
    """Some, not all, of a batch's events have history steps already: the batch cannot be
    applied together (its statuses were worked out with them); the consumer rolls it back and
    applies its events one at a time, each refused or applied alone."""


async def apply_lifecycles(*, session: AsyncSession, events: Sequence[Event]) -> list[str]:
    """Record what dispatch and mediation events mean for their tickets, in delivery order:
    each dispatch's state, a history step per event (with the ticket's status after it), and
    the ticket's status (a ticket intake never took gets the history only). Returns the ids of
    the events applied: an event with a history step already (a redelivery) is refused.

    A batch is worked in memory from one read of its tickets' dispatches and written with one
    statement per table (on PostgreSQL one statement in all): the rows end as applying the
    events one at a time would leave them. The history's unique event id is the ledger: a
    batch all of whose events have steps writes nothing, so the consumer needs no inbox
    look-up or inbox rows for these events. A batch of which only some have steps raises
    ``Redelivered`` (see there)."""
    found = [(event, lifecycle.step_for(event)) for event in events]
    steps = [(event, step) for event, step in found if step is not None]
    # An event with no step changes nothing: applied, whatever came before.
    applied = [str(event.event_id) for event, step in found if step is None]
    if not steps:
        return applied
    tickets = sorted({step.ticket_id for _, step in steps})
    # A change may name a dispatch filed under another ticket (or none yet): read those too,
    # in the same statement (one array each on PostgreSQL, whatever the fetch's size).
    named = sorted({c.dispatch_id for _, step in steps for c in step.changes})
    if session.get_bind().dialect.name == "postgresql":
        return applied + await _apply_pg(session, steps, tickets, named)
    rows: dict[str, dict[str, Any]] = {}  # dispatch id -> its row, as it stands
    d = DISPATCHES
    by_ticket = list(bulk.among(session, d.c.ticket_id, tickets))
    by_id = list(bulk.among(session, d.c.dispatch_id, named))
    reads = [or_(*by_ticket, *by_id)] if len(by_ticket) + len(by_id) <= 2 else by_ticket + by_id
    for condition in reads:
        result = await session.execute(select(d).where(condition))
        rows.update((r.dispatch_id, dict(r._mapping)) for r in result)
    changed, history, ticket_values = _fold(steps, rows)
    stored = set(
        await bulk.upsert(
            session,
            HISTORY,
            history,
            key=["event_id"],
            on_conflict=OnConflict.NOTHING,
            returning="event_id",
        )
    )
    if not stored:
        return applied  # all redelivered: nothing written
    if len(stored) < len(history):
        raise Redelivered(f"{len(history) - len(stored)} of {len(history)} events applied before")
    await _write(session, rows, changed, ticket_values)
    return applied + [h["event_id"] for h in history]


def _fold(
    steps: Sequence[tuple[Event, lifecycle.Step]], rows: dict[str, dict[str, Any]]
) -> tuple[set[str], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The batch's steps applied in order to its dispatches' ``rows`` (changed in place, new
    ones added): the dispatch ids changed, the history rows, each ticket's values to set."""
    mine_of: dict[str, list[dict[str, Any]]] = {}  # ticket id -> its rows, in the order of rows
    for stored_row in rows.values():
        mine_of.setdefault(stored_row["ticket_id"], []).append(stored_row)
    changed: set[str] = set()
    history: list[dict[str, Any]] = []
    ticket_values: dict[str, dict[str, Any]] = {}
    for event, step in steps:
        at = event.occurred_at
        for change in step.changes:
            row = rows.get(change.dispatch_id)
            if row is None:
                row = rows[change.dispatch_id] = {
                    "dispatch_id": change.dispatch_id,
                    "ticket_id": step.ticket_id,
                    "department_code": None,
                    "state": change.state or "assigned",
                    "resolved": None,
                    "due_at": None,
                }
                mine_of.setdefault(step.ticket_id, []).append(row)
            row["updated_at"] = at
            for name in ("state", "department_code", "due_at", "resolved"):
                value = getattr(change, name)
                if value is not None:
                    row[name] = value
            changed.add(change.dispatch_id)
        mine = mine_of.get(step.ticket_id, [])
        status = lifecycle.ticket_status((r["dispatch_id"], r["state"]) for r in mine)
        open_rows = [
            r
            for r in mine
            if r["state"] in lifecycle.OPEN_STATES
            and not r["dispatch_id"].startswith(lifecycle.CASE_PREFIX)
        ]
        latest = max(open_rows, key=lambda r: r["updated_at"], default=None)
        dues = [r["due_at"] for r in open_rows if r["due_at"] is not None]
        values = ticket_values.setdefault(step.ticket_id, {})
        values.update(
            status=status,
            status_at=at,
            department_code=(
                latest["department_code"] if latest is not None else step.department_code
            ),
            due_at=min(dues) if dues else None,
        )
        if step.time_limit_profile is not None:
            values["time_limit_profile"] = step.time_limit_profile
        history.append(
            {
                "ticket_id": step.ticket_id,
                "event_id": str(event.event_id),
                "event_type": event.event_type,
                "occurred_at": at,
                "dispatch_id": step.dispatch_id,
                "department_code": step.department_code,
                "note": step.note,
                "status": status,
            }
        )
    return changed, history, ticket_values


async def _apply_pg(
    session: AsyncSession,
    steps: Sequence[tuple[Event, lifecycle.Step]],
    tickets: list[str],
    named: list[str],
) -> list[str]:
    """``apply_lifecycles`` on PostgreSQL: the read and the one write on the driver's
    connection, two round trips a fetch. The consumer's transaction sends nothing unless it
    was open on the connection before (then both are part of it): each statement is all or
    nothing alone, and the consumer writes no inbox rows for these events, so BEGIN and COMMIT
    (and SQLAlchemy's execution of four statements) were round trips that protected nothing."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    rows = {r["dispatch_id"]: dict(r.items()) for r in await driver.fetch(_READ_PG, tickets, named)}
    changed, history, ticket_values = _fold(steps, rows)
    arrays = _columns(history, _HISTORY_COLUMNS)
    arrays += _columns([rows[k] for k in sorted(changed)], _DISPATCH_COLUMNS)
    arrays += _columns(
        [{"ticket_id": k, **v} for k, v in sorted(ticket_values.items())], _TICKET_COLUMNS
    )
    seen = await driver.fetchval(_WRITE_PG, *arrays)
    if not seen:
        return [h["event_id"] for h in history]
    if seen < len(history):
        raise Redelivered(f"{seen} of {len(history)} events applied before")
    return []  # all redelivered: nothing written


def _columns(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[list[Any]]:
    """``rows`` as one list a column (a missing value is None), datetimes in UTC as the
    columns' type stores them (a naive one refused, as there)."""
    out = []
    for name in names:
        values = [row.get(name) for row in rows]
        if name in _DATETIMES:
            values = [None if v is None else _utc(v) for v in values]
        out.append(values)
    return out


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime refused: pass a timezone-aware value")
    return value.astimezone(UTC)


async def _write(
    session: AsyncSession,
    rows: dict[str, dict[str, Any]],
    changed: set[str],
    ticket_values: dict[str, dict[str, Any]],
) -> None:
    """SQLite: the dispatches' and tickets' rows (the history is written first), one
    statement per table and shape."""
    d = DISPATCHES
    columns = [c.name for c in d.columns]
    # New and stored alike: the rows as they now stand, inserted or replaced.
    written = [{c: rows[k][c] for c in columns} for k in sorted(changed)]
    await bulk.upsert(session, d, written, key=["dispatch_id"], on_conflict=OnConflict.REPLACE)
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for ticket_id, values in sorted(ticket_values.items()):
        by_shape.setdefault(tuple(values), []).append({"ticket_id": ticket_id, **values})
    for params in by_shape.values():
        await bulk.update_many(session, TICKETS, params, key="ticket_id")
