"""Following each ticket's life through dispatch's and mediation's events: the dispatch states,
the history steps and the status the hotline and Open311 show (intake's event handlers call it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select, text
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


# A fetch's dispatches on PostgreSQL: its tickets' by one index probe a ticket (a lateral
# subquery that is not flattened, ``OFFSET 0``, runs once a key), and the ones its changes name
# by one probe of the primary key each. As ``ticket_id = ANY(...)`` it was planned as a scan of
# the whole table at every fetch wherever the table has no statistics (a server without
# autovacuum, or a surge before it analyses): each element's default selectivity times a
# fetch's tickets came to much of the table (1.47 M rows read by 159 fetches in a one-minute
# suite run that stored 20,000 tickets); ``dispatch_id = ANY(...)`` is scanned on a small table.
_DISPATCHES_OF = text(
    " UNION ALL ".join(
        f"SELECT d.* FROM unnest(CAST(:{keys} AS VARCHAR[])) AS k(v) CROSS JOIN LATERAL "
        f"(SELECT * FROM {DISPATCHES.name} WHERE {column} = k.v OFFSET 0) AS d"
        for keys, column in (("tickets", "ticket_id"), ("named", "dispatch_id"))
    )
).columns(*DISPATCHES.c)


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
    statement per table: the rows end as applying the events one at a time would leave them.
    The history's unique event id is the ledger: its insert goes first and refuses what it
    holds, so the consumer needs no inbox look-up or inbox rows for these events. A batch of
    which only some are refused raises ``Redelivered`` (see there)."""
    found = [(event, lifecycle.step_for(event)) for event in events]
    steps = [(event, step) for event, step in found if step is not None]
    # An event with no step changes nothing: applied, whatever came before.
    applied = [str(event.event_id) for event, step in found if step is None]
    if not steps:
        return applied
    d = DISPATCHES
    tickets = sorted({step.ticket_id for _, step in steps})
    # A change may name a dispatch filed under another ticket (or none yet): read those too,
    # in the same statement (one array each on PostgreSQL, whatever the fetch's size).
    named = sorted({c.dispatch_id for _, step in steps for c in step.changes})
    rows: dict[str, dict[str, Any]] = {}  # dispatch id -> its row, as it stands
    if session.get_bind().dialect.name == "postgresql":
        result = await session.execute(_DISPATCHES_OF, {"tickets": tickets, "named": named})
        rows.update((r.dispatch_id, dict(r._mapping)) for r in result)
    else:
        by_ticket = list(bulk.among(session, d.c.ticket_id, tickets))
        by_id = list(bulk.among(session, d.c.dispatch_id, named))
        reads = [or_(*by_ticket, *by_id)] if len(by_ticket) + len(by_id) <= 2 else by_ticket + by_id
        for condition in reads:
            result = await session.execute(select(d).where(condition))
            rows.update((r.dispatch_id, dict(r._mapping)) for r in result)
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


async def _write(
    session: AsyncSession,
    rows: dict[str, dict[str, Any]],
    changed: set[str],
    ticket_values: dict[str, dict[str, Any]],
) -> None:
    """The dispatches' and tickets' rows (the history is written first): one statement per
    table and shape, whatever the batch's size: on PostgreSQL an
    ``executemany`` is a statement planned and run once a row."""
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
