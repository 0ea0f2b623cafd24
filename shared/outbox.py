"""Transactional outbox: events are rows written in the same transaction as the state change
that causes them; a relay publishes pending rows in batches.

A row is pending while ``outbox_pending`` holds its id: the database writes that row (a trigger)
in the transaction that inserts the event, and the relay's claim deletes it in the transaction
it commits once the broker has the record. The outbox row is written once and never updated.

Rows stay for a retention window after their publication so that a wiped, rotated or replaced
broker can be refilled: when the relay finds a new cluster id it replays every retained row onto
it, oldest first, and the consumers' inboxes drop what they had already applied.

The window runs from a row's publication, not ``created_at``: what a consumer may still need is a
record it has not read yet, and it can first read a record when it is published (a row may wait
out a long broker outage first). The minutes of publication are kept in ``outbox_published``
(per relay and minute, the lowest id published in it). A replay records none — it walks a cursor
kept in ``bus_state`` — or every rotation would renew every row's window and the broker's
memory would grow without bound. A consumer that had not read a row before a rotation (so it
lags by less than L) reads it again within L after the replay: with a window of at least twice
the longest consumer lag, no row is purged before every consumer could have read it.

Every event is a state change, so the outbox is also where the audit trail is written: each
event written gets an ``audit_trail`` row in the same transaction naming who caused it — the
principal of the request being served (``shared.auth.acting_principal``), or the system for
consumers, schedulers and start-up work. Audit rows are kept when outbox rows are purged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    column,
    func,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy import table as sa_table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared import bulk
from shared.auth import SYSTEM_ROLE, Principal, acting_principal
from shared.bus import (
    BrokerWatch,
    Outgoing,
    ensure_topics,
    fetch_cluster_id,
    make_admin,
    make_producer,
    partition_batches,
    send_batches,
    topic_name,
)
from shared.db import AwareDateTime
from shared.events.base import HEADER_NAMES, Encoded, Event, Record, encode, utcnow
from shared.groupcommit import Columns, Same
from shared.lease import HostLease
from shared.metrics import ServiceMetrics
from shared.rotation import Handover, read_handover
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

_BIGINT_PK = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def bus_tables(metadata: MetaData, *, bundles: bool = False) -> tuple[Table, Table, Table]:
    """Declare the outbox, inbox and bus-state tables in a service's metadata; with ``bundles``
    the outbox (and its pending rows) have ``records``, so a row may hold many events
    (``bundle_row``)."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("topic", String(128), nullable=False),
        Column("key", String(128), nullable=False),
        # The record's headers as the relay hands them to the producer (``pack_headers``); rows
        # written before it existed, and headers it cannot hold, keep them in ``headers`` as
        # JSON (``[[name, text], ...]``), which is then the empty string otherwise.
        Column("headers", Text, nullable=False),
        Column("header_block", LargeBinary, nullable=True),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", AwareDateTime(), nullable=False),
        *([Column(RECORDS, Integer, nullable=True)] if bundles else []),
        Index("ix_outbox_created", "created_at"),
    )
    pending_table(metadata, bundles=bundles)
    published_table(metadata)
    # Every row inserted gets its pending row from the database, whoever writes it.
    sa_event.listen(outbox, "after_create", _on_outbox_created)
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("event_type", String(128), nullable=False),
        Column("status", String(16), nullable=False),  # applied | dead_lettered
        Column("topic", String(128), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("error", Text, nullable=True),
        Column("processed_at", AwareDateTime(), nullable=False),
    )
    bus_state = Table(
        "bus_state",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("value", Text, nullable=False),
        Column("updated_at", AwareDateTime(), nullable=False),
    )
    audit_table(metadata)  # found by ``Outbox`` through the metadata it shares with ``outbox``
    return outbox, inbox, bus_state


PENDING_TABLE = "outbox_pending"
# A bundle's count of events (``bundle_row``); NULL in a row of one event.
RECORDS = "records"
PUBLISHED_TABLE = "outbox_published"
# The trigger (and, on PostgreSQL, its function) that writes an outbox row's pending row.
_PEND = "outbox_pend"


def pending_table(metadata: MetaData, *, bundles: bool = False) -> Table:
    """Declare the ids of the outbox rows not yet published: a row is written here by the
    database (``_on_outbox_created``) in the transaction that inserts the outbox row, and deleted
    by the relay's claim, in the transaction that commits once the broker has the record. The
    outbox row itself is never updated: its mark was the dearest write of an event (a second
    copy of a 1.3–1.8 kB row with an entry in every index: ``published_at`` was indexed, so the
    update could never be heap-only); a pending row is an id and one index entry, and its
    deletion writes no index entry. With ``bundles``, also the row's ``records``: the claim
    counts the events it takes without reading the outbox."""
    return Table(
        PENDING_TABLE,
        metadata,
        Column("id", _BIGINT_PK, primary_key=True, autoincrement=False),
        *([Column(RECORDS, Integer, nullable=True)] if bundles else []),
    )


def published_table(metadata: MetaData) -> Table:
    """Declare when rows were published, coarsely: per minute (``published_at``, its start) and
    relay, the lowest id the relay published in it. What the retention window needs
    (``OutboxRelay.purge_expired``): a row published after the cutoff was published in a
    minute recorded here with a first id at most its own, so every row below the lowest first
    id of the minutes since the cutoff, and not pending, was published before it. One row per
    relay and minute in which it published (upserted by its claims, a heap-only update of a
    narrow row); a row per relay keeps replicas claiming side by side from queueing on one."""
    return Table(
        PUBLISHED_TABLE,
        metadata,
        Column("published_at", AwareDateTime(), primary_key=True),
        Column("relay", String(64), primary_key=True),
        Column("first_id", BigInteger, nullable=False),
    )


def is_pending(outbox: Table) -> Any:
    """The condition an outbox row not yet published meets: its pending row is there."""
    p = outbox.metadata.tables[PENDING_TABLE]
    return select(p.c.id).where(p.c.id == outbox.c.id).exists()


def _schema_prefix(conn: Connection) -> str:
    """PostgreSQL: the quoted schema the tables were created in, with a dot (the trigger names
    its tables there, whatever the search path of the session that inserts)."""
    schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
    return '"{}".'.format(str(schema).replace('"', '""'))


def create_pending_trigger(conn: Connection, *, bundles: bool = False) -> None:
    """Have the database write a pending row for every outbox row inserted, by every writer
    (the group committer, the bulk writers, ``Outbox.add``, the dead-letter path, the call-back
    handler) and in its transaction, with no writer knowing of it. PostgreSQL: one trigger
    per statement over its inserted rows (a transition table), not one per row; SQLite: one
    per row (in process, no round trip either way). With ``bundles`` the pending row copies
    the row's ``records``."""
    columns = f"id, {RECORDS}" if bundles else "id"
    if conn.dialect.name == "postgresql":
        at = _schema_prefix(conn)
        conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {at}{_PEND}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN INSERT INTO {at}{PENDING_TABLE} ({columns}) SELECT {columns} FROM inserted; "
            "RETURN NULL; END $$"
        )
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_PEND} ON {at}outbox")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {_PEND} AFTER INSERT ON {at}outbox REFERENCING NEW TABLE AS "
            f"inserted FOR EACH STATEMENT EXECUTE FUNCTION {at}{_PEND}()"
        )
    else:
        values = f"NEW.id, NEW.{RECORDS}" if bundles else "NEW.id"
        conn.exec_driver_sql(
            f"CREATE TRIGGER IF NOT EXISTS {_PEND} AFTER INSERT ON outbox BEGIN "
            f"INSERT INTO {PENDING_TABLE} ({columns}) VALUES ({values}); END"
        )


def drop_pending_trigger(conn: Connection) -> None:
    """Remove what ``create_pending_trigger`` made."""
    if conn.dialect.name == "postgresql":
        at = _schema_prefix(conn)
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_PEND} ON {at}outbox")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {at}{_PEND}()")
    else:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_PEND}")


def _on_outbox_created(table: Table, conn: Connection, **_: Any) -> None:
    """``metadata.create_all`` (tests, benchmarks): the trigger with the table (and a bundle's
    payload stored as it is, ``_store_payloads_whole``)."""
    bundles = RECORDS in table.c
    if bundles:
        _store_payloads_whole(conn)
    create_pending_trigger(conn, bundles=bundles)


def _store_payloads_whole(conn: Connection) -> None:
    """PostgreSQL: the outbox's payloads kept out of line uncompressed (``STORAGE EXTERNAL``).
    A row of one event is never large enough to be moved out of line or compressed, so this
    changes nothing for it; a bundle's payload (a batch file's events, ~1 MB) is, and
    PostgreSQL's default compression (pglz) cost its backend ~8 ms of CPU a 1,000-event bundle,
    against ~2 ms stored whole — as much as the rows it replaces."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"ALTER TABLE {_schema_prefix(conn)}outbox ALTER COLUMN payload SET STORAGE EXTERNAL"
        )


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


_MIGRATION_RELAY = "migration"


def add_pending_table(op: Any) -> None:
    """The migration of every service to the pending table (``op`` is Alembic's): the two new
    tables; a pending row for every row not yet published; the publication times of the rows
    published so far kept per minute (what ``purge_expired`` reads, so each keeps its window);
    ``published_at`` and its index dropped (PostgreSQL: catalog changes; SQLite copies the
    table); then the trigger. One transaction: a writer that inserts meanwhile waits for it.
    Its migrations call it: change it only with a new one."""
    bind: Connection = op.get_bind()
    meta = MetaData()
    for made in (pending_table(meta), published_table(meta)):
        op.create_table(
            made.name,
            *[
                Column(
                    c.name,
                    c.type,
                    primary_key=c.primary_key,
                    nullable=c.nullable,
                    autoincrement=c.autoincrement,
                )
                for c in made.columns
            ],
        )
    t = sa_table("outbox", column("id"), column("published_at", AwareDateTime()))
    bind.execute(
        sa_table(PENDING_TABLE, column("id"))
        .insert()
        .from_select(["id"], select(t.c.id).where(t.c.published_at.is_(None)))
    )
    firsts: dict[datetime, int] = {}
    published = select(t.c.published_at, func.min(t.c.id)).where(t.c.published_at.is_not(None))
    for moment, first in bind.execute(published.group_by(t.c.published_at)):
        minute = _minute(moment)
        firsts[minute] = min(first, firsts.get(minute, first))
    marks = meta.tables[PUBLISHED_TABLE]
    for chunk in bulk.chunks(sorted(firsts.items())):
        bind.execute(
            marks.insert(),
            [{"published_at": m, "relay": _MIGRATION_RELAY, "first_id": f} for m, f in chunk],
        )
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index("ix_outbox_pending")
        batch_op.drop_column("published_at")
    create_pending_trigger(bind)


def drop_pending_table(op: Any) -> None:
    """Its downgrade: ``published_at`` back with its index, set for every row not pending to the
    time of the downgrade (the minute each was published in is not kept per row: every
    published row keeps at least its window, some up to a window more), the trigger and the
    two tables gone."""
    bind: Connection = op.get_bind()
    drop_pending_trigger(bind)
    op.add_column("outbox", Column("published_at", AwareDateTime(), nullable=True))
    op.create_index("ix_outbox_pending", "outbox", ["published_at", "id"])
    t = sa_table("outbox", column("id"), column("published_at", AwareDateTime()))
    p = sa_table(PENDING_TABLE, column("id"))
    bind.execute(
        update(t)
        .where(~select(p.c.id).where(p.c.id == t.c.id).exists())
        .values(published_at=utcnow())
    )
    op.drop_table(PUBLISHED_TABLE)
    op.drop_table(PENDING_TABLE)


def add_bundles(op: Any) -> None:
    """The migration of a service to outbox bundles (``op`` is Alembic's): ``records`` on the
    outbox and its pending rows (nullable, no default: a catalog change on both databases, no
    row touched), the payloads stored whole (``_store_payloads_whole``) and the trigger copying
    ``records``. Rows written before it are rows of one event. Its migrations call it: change
    it only with a new one."""
    bind: Connection = op.get_bind()
    op.add_column("outbox", Column(RECORDS, Integer(), nullable=True))
    op.add_column(PENDING_TABLE, Column(RECORDS, Integer(), nullable=True))
    _store_payloads_whole(bind)
    drop_pending_trigger(bind)
    create_pending_trigger(bind, bundles=True)


def drop_bundles(op: Any) -> None:
    """Its downgrade: every bundle still kept split into rows of one event (not in its place in
    the id order: the rows after it keep their ids, so the split rows take new ones and, if the
    bundle was pending, are pending), the columns gone, the payloads' storage and the trigger
    as before. A bundle a relay is sending meanwhile may be sent twice; every consumer takes an
    event again by its id."""
    bind: Connection = op.get_bind()
    t = sa_table(
        "outbox",
        column("id"),
        column("event_id"),
        column("event_type"),
        column("topic"),
        column("key"),
        column("headers"),
        column("header_block", LargeBinary),
        column("payload", LargeBinary),
        column("created_at", AwareDateTime()),
        column(RECORDS),
    )
    p = sa_table(PENDING_TABLE, column("id"))
    drop_pending_trigger(bind)
    create_pending_trigger(bind)  # the split rows' pending rows, as the code before it writes
    for row in bind.execute(select(t).where(t.c[RECORDS].is_not(None)).order_by(t.c.id)).all():
        pending = bind.execute(select(p.c.id).where(p.c.id == row.id)).first() is not None
        bind.execute(t.delete().where(t.c.id == row.id))
        bind.execute(p.delete().where(p.c.id == row.id))
        split = [
            {
                "event_id": dict(headers).get("ce_id", row.event_id.encode()).decode(),
                "event_type": row.event_type,
                "topic": row.topic,
                "key": key.decode(),
                "headers": "",
                "header_block": pack_headers(headers),
                "payload": value,
                "created_at": row.created_at,
            }
            for key, value, headers in unpack_bundle(row.payload)
        ]
        for chunk in bulk.chunks(split):
            ids = bind.execute(t.insert().returning(t.c.id), chunk).scalars().all()
            if not pending:
                bind.execute(p.delete().where(p.c.id.in_(ids)))
    drop_pending_trigger(bind)  # SQLite copies both tables, which the trigger names
    with op.batch_alter_table(PENDING_TABLE) as batch_op:
        batch_op.drop_column(RECORDS)
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column(RECORDS)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(
            f"ALTER TABLE {_schema_prefix(bind)}outbox ALTER COLUMN payload SET STORAGE EXTENDED"
        )
    create_pending_trigger(bind)


AUDIT_TABLE = "audit_trail"


def audit_table(metadata: MetaData) -> Table:
    """Declare the audit trail: one row per event a service wrote, with who caused it."""
    return Table(
        AUDIT_TABLE,
        metadata,
        Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("ticket_id", String(64), nullable=True),
        Column("actor_role", String(32), nullable=False),
        Column("actor_subject", String(64), nullable=False),
        Column("actor_unit", String(64), nullable=True),
        Column("occurred_at", AwareDateTime(), nullable=False),
        Column("recorded_at", AwareDateTime(), nullable=False),
        Index("ix_audit_trail_ticket", "ticket_id", "occurred_at"),
    )


def audit_row(event: Event, actor: Principal | None, *, now: datetime) -> dict[str, Any]:
    """The audit row of one event: who caused it (the system when no request did), and when."""
    ticket_id = getattr(event, "ticket_id", None)
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "ticket_id": str(ticket_id) if ticket_id is not None else None,
        "actor_role": actor.role.value if actor else SYSTEM_ROLE,
        "actor_subject": actor.subject if actor else SYSTEM_ROLE,
        "actor_unit": actor.department_code if actor else None,
        "occurred_at": event.occurred_at,
        "recorded_at": now,
    }


async def read_audit_trail(
    conn: AsyncConnection, table: Table, *, ticket_id: str, limit: int = 1000
) -> list[dict[str, Any]]:
    """One ticket's audit rows, oldest first."""
    rows = await conn.execute(
        select(
            table.c.occurred_at,
            table.c.event_type,
            table.c.event_id,
            table.c.actor_role,
            table.c.actor_subject,
            table.c.actor_unit,
            table.c.recorded_at,
        )
        .where(table.c.ticket_id == ticket_id)
        .order_by(table.c.occurred_at, table.c.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]


# A block of exactly ``HEADER_NAMES`` (what ``shared.events.base.encode`` writes, in its order)
# holds their values alone; any other list takes the named form.
_CLOUDEVENTS_NAMES = HEADER_NAMES
_VALUES_ONLY, _NAMED = b"c", b"n"


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    """A record's headers as the outbox stores them for the relay: their fields joined by NUL
    bytes and a last field naming the form — ``c``, the values of ``_CLOUDEVENTS_NAMES`` in
    that order (what every event's record carries), or ``n``, each name and value in turn. The
    relay splits a block once and pairs the fields in C (``unpack_headers``) instead of
    decoding JSON and encoding every value. None when a name or value holds a NUL byte (the
    row keeps JSON)."""
    if tuple([name for name, _ in headers]) == _CLOUDEVENTS_NAMES:
        fields = [value for _, value in headers]
        form = _VALUES_ONLY
    else:
        fields = [part for name, value in headers for part in (name.encode(), value)]
        form = _NAMED
    fields.append(form)
    block = b"\0".join(fields)
    # A NUL inside a field would show as one more separator than the fields have between them.
    return block if block.count(b"\0") == len(fields) - 1 else None


def unpack_headers(block: bytes) -> list[tuple[str, bytes]]:
    """The headers ``pack_headers`` stored, as the producer takes them."""
    fields = block.split(b"\0")
    if fields[-1] == _VALUES_ONLY:
        # the form's own field, last, is left unpaired
        return list(zip(_CLOUDEVENTS_NAMES, fields, strict=False))
    return list(zip(map(bytes.decode, fields[0:-1:2]), fields[1:-1:2], strict=True))


def json_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    """Headers as rows written before ``header_block`` held them (values as UTF-8 text)."""
    return orjson.dumps([[k, v.decode("utf-8", "replace")] for k, v in headers]).decode()


def row_headers(headers: str, block: bytes | None) -> list[tuple[str, bytes]]:
    """The headers of a stored row, in either form."""
    if block is not None:
        return unpack_headers(block)
    return [(k, v.encode()) for k, v in orjson.loads(headers)]


def add_header_block(op: Any) -> None:
    """The migration of every service to ``header_block`` (``op`` is Alembic's): a nullable column
    without a default, which PostgreSQL and SQLite add without touching a row (a catalog change
    under a brief lock: safe on a live table). Rows written before it keep their JSON in
    ``headers`` and are relayed from it. Its migrations call it: change it only with a new one."""
    op.add_column("outbox", Column("header_block", LargeBinary(), nullable=True))


def drop_header_block(op: Any) -> None:
    """Its downgrade: every row's block written back into ``headers`` as JSON, the form the code
    before it reads (1,000 rows a statement), then the column dropped."""
    bind: Connection = op.get_bind()
    t = sa_table("outbox", column("id"), column("headers"), column("header_block", LargeBinary))
    stored = t.c.header_block.is_not(None)
    back = (
        update(t)
        .where(t.c.id == bindparam("row"))
        .values(headers=bindparam("json"), header_block=None)
    )
    while rows := bind.execute(select(t.c.id, t.c.header_block).where(stored).limit(1000)).all():
        bind.execute(
            back, [{"row": i, "json": json_headers(unpack_headers(block))} for i, block in rows]
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("header_block")


# The unique constraints ``event_id`` had on ``outbox`` and ``audit_trail`` until
# ``drop_event_id_unique``, by the names PostgreSQL gave them (SQLite's were unnamed).
_EVENT_ID_UNIQUE = {"outbox": "outbox_event_id_key", AUDIT_TABLE: "audit_trail_event_id_key"}


def drop_event_id_unique(op: Any) -> None:
    """The migration of every service that drops the unique constraints on ``outbox.event_id`` and
    ``audit_trail.event_id`` (``op`` is Alembic's). No statement reads either table by event id —
    the relay claims by ``(published_at, id)``, purges by ``published_at``, the audit trail is read
    by ticket — and no writer relies on a clash: an event's id is a fresh uuid4 given when the event
    is built, and every row of an event is written in the transaction that built it, with the state
    change it records (a group retried unit by unit writes only what rolled back); a dead-lettered
    record's row (``dlq:<consumer>:<event id>``) is written with that consumer's inbox row for the
    event, whose primary key refuses a second. The indexes behind them were upkeep on every insert
    (~7 µs of PostgreSQL's CPU a ticket for intake's two). PostgreSQL drops each in place (a catalog
    change and the index's files, under a brief exclusive lock); SQLite cannot drop a constraint and
    copies each table into one without it (its unnamed constraint named for the copy as PostgreSQL
    names it). Its migrations call it: change it only with a new one."""
    for table, name in _EVENT_ID_UNIQUE.items():
        with op.batch_alter_table(
            table, naming_convention={"uq": "%(table_name)s_%(column_0_name)s_key"}
        ) as batch_op:
            batch_op.drop_constraint(name, type_="unique")


def restore_event_id_unique(op: Any) -> None:
    """Its downgrade: the constraints back under their PostgreSQL names (each index built under
    an exclusive lock; an event id written twice meanwhile stops it, the error naming the
    index)."""
    for table, name in _EVENT_ID_UNIQUE.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_unique_constraint(name, ["event_id"])


def record_row(record: Record, *, event_id: str, event_type: str, topic: str) -> dict[str, Any]:
    """An outbox row for an already-encoded record (the relay sends it verbatim)."""
    block = pack_headers(record.headers)
    return {
        "event_id": event_id,
        "event_type": event_type,
        "topic": topic,
        "key": record.key.decode(),
        "headers": "" if block is not None else json_headers(record.headers),
        "header_block": block,
        "payload": record.value,
        "created_at": utcnow(),
    }


def event_ids(events: Sequence[Encoded]) -> list[str]:
    """The events' ids as their outbox and audit rows hold them."""
    return list(map(str, (e.event_id for e in events)))


def record_columns(
    table: Table, events: Sequence[Encoded], *, now: datetime, ids: list[str] | None = None
) -> Columns:
    """The outbox rows of many encoded events a column at a time, for the group committer:
    ``record_row`` of each, created ``now`` (a test holds them equal); ``ids``: their
    ``event_ids`` if the caller has them."""
    records = [e.record for e in events]
    blocks = [pack_headers(r.headers) for r in records]
    return Columns(
        table,
        len(events),
        {
            "event_id": event_ids(events) if ids is None else ids,
            "event_type": [e.event_type for e in events],
            "topic": [e.topic for e in events],
            "key": [r.key.decode() for r in records],
            "headers": [
                "" if block is not None else json_headers(r.headers)
                for r, block in zip(records, blocks, strict=True)
            ],
            "header_block": blocks,
            "payload": [r.value for r in records],
            "created_at": Same(now),
        },
    )


def audit_columns(
    table: Table,
    events: Sequence[Encoded],
    actor: Principal | None,
    *,
    now: datetime,
    ids: list[str] | None = None,
) -> Columns:
    """The audit rows of many encoded events caused by one actor, a column at a time:
    ``audit_row`` of each (a test holds them equal); ``ids`` as for ``record_columns``."""
    return Columns(
        table,
        len(events),
        {
            "event_id": event_ids(events) if ids is None else ids,
            "event_type": [e.event_type for e in events],
            "ticket_id": [None if e.ticket_id is None else str(e.ticket_id) for e in events],
            "actor_role": Same(actor.role.value if actor else SYSTEM_ROLE),
            "actor_subject": Same(actor.subject if actor else SYSTEM_ROLE),
            "actor_unit": Same(actor.department_code if actor else None),
            "occurred_at": [e.occurred_at for e in events],
            "recorded_at": Same(now),
        },
    )


# A bundle's payload: each event's record in turn, as the lengths of its key, header block
# (``pack_headers``) and value, then those bytes.
_FRAME = struct.Struct("!III")


def bundle_row(
    events: Sequence[Encoded], *, now: datetime, ids: list[str] | None = None
) -> dict[str, Any] | None:
    """One outbox row holding many events' records (a bundle): what a batch file's unit writes
    instead of a row an event. An outbox row costs PostgreSQL more than its bytes — a heap
    tuple, two index entries, a pending row with its own, then the claim's delete of it (~13 µs
    of the backends' CPU an event); a bundle pays those once, and its payload is stored whole
    (``_store_payloads_whole``). The relay sends each record as ``record_row``'s row of it
    would be sent (a test holds the two equal), in the bundle's order, at the bundle's place
    among the rows. The row's ``event_id`` and ``key`` are the first event's; ``records``,
    how many it holds. None when the events do not share one topic and type, or a record's
    headers cannot be packed: the caller writes a row each (``record_columns``)."""
    if not events:
        return None
    first = events[0]
    topic, event_type = first.topic, first.event_type
    parts: list[bytes] = []
    frame = _FRAME.pack
    for e in events:  # one pass: the check and the frame of each event
        key, value, block = e.record.key, e.record.value, pack_headers(e.record.headers)
        if block is None or e.topic != topic or e.event_type != event_type:
            return None
        parts += (frame(len(key), len(block), len(value)), key, block, value)
    return {
        "event_id": str(first.event_id) if ids is None else ids[0],
        "event_type": first.event_type,
        "topic": first.topic,
        "key": first.record.key.decode(),
        "headers": "",
        "header_block": None,
        "payload": b"".join(parts),
        "created_at": now,
        RECORDS: len(events),
    }


def unpack_bundle(payload: bytes) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """A bundle's records as the producer takes them: (key, value, headers) each, in order."""
    out = []
    at, end, frame = 0, len(payload), _FRAME.unpack_from
    while at < end:
        k, b, v = frame(payload, at)
        key_at = at + 12
        value_at = key_at + k + b
        at = value_at + v
        if at > end:
            raise ValueError(f"an outbox bundle's last record ends {at - end} bytes past it")
        out.append(
            (
                payload[key_at : key_at + k],
                payload[value_at:at],
                unpack_headers(payload[key_at + k : value_at]),
            )
        )
    return out


def event_row(event: Event) -> dict[str, Any]:
    """An outbox row for one event, encoded as a CloudEvents record now, off the relay's path."""
    return record_row(
        encode(event), event_id=str(event.event_id), event_type=event.event_type, topic=event.topic
    )


class Outbox:
    """A service's outbox table and the ways to write to it inside a caller's transaction."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.audit: Table | None = table.metadata.tables.get(AUDIT_TABLE)

    def rows(self, events: Iterable[Event]) -> list[tuple[Table, dict[str, Any]]]:
        """Insert units for the group committer (the audit rows with them)."""
        events = list(events)
        units = [(self.table, event_row(e)) for e in events]
        if self.audit is not None:
            units += [(self.audit, row) for row in self.audit_rows(events)]
        return units

    async def add(self, session: AsyncSession | AsyncConnection, *events: Event) -> None:
        """Write events in the caller's open transaction; they publish only if it commits."""
        if events:
            await bulk.insert(session, self.table, [event_row(e) for e in events])
            if self.audit is not None:
                await bulk.insert(session, self.audit, self.audit_rows(events))

    @staticmethod
    def audit_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
        """Audit rows for events caused now, by whoever this task is serving."""
        actor, now = acting_principal(), utcnow()
        return [audit_row(e, actor, now=now) for e in events]


# Above every id: the bound of a purge when nothing was published within the window.
_NO_ID = 2**63 - 1


def _first(row: Any) -> Any:
    return row[0]


# The claim's transaction, begun with its settings in the same round trip; ``SET LOCAL`` ends
# with the transaction, so the connection goes back to its pool as it came. The planner's (see
# ``OutboxRelay._driver_statements``), and its commit not waiting for the WAL flush: the claim
# only records that the broker has the batch's records, and a claim lost with the server's last
# moments leaves its rows pending, to be sent again — what a relay that stops between the
# broker's acknowledgement and its commit already does, and every consumer takes an event
# again by its id. The next durable commit of any session (a group's insert, a consumer's
# fetch) flushes it with its own; waiting for its own flush cost the claim's backend ~0.4 ms of
# CPU a commit (``pwrite`` and ``fdatasync`` of the WAL), more than the claim itself.
_CLAIM_BEGIN = "BEGIN; SET LOCAL enable_sort = off; SET LOCAL synchronous_commit = off"


# Rows claimed between two vacuums of the pending table by the relay (PostgreSQL; see
# ``OutboxRelay._maybe_vacuum_pending``).
_VACUUM_PENDING_EVERY = 10_000
# A relay's completed sends it remembers for a rotation's handover (``OutboxRelay._sent``):
# ~20 minutes at the rate of a surge, days when the suite is quiet.
_SENDS_KEPT = 20_000
# How long after its claim a send may complete: a send fails within the producer's request
# time-out (40 s by default) and its claim is rolled back; the minute stamped by a claim is
# read this much earlier (``OutboxRelay._unread_from``).
_CLAIM_TO_SEND = timedelta(minutes=5)


class OutboxRelay:
    """Publishes pending outbox rows in id order, takes their pending rows, and watches the
    broker's identity."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        outbox: Table,
        bus_state: Table,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        watch: BrokerWatch,
        client_id: str,
        reader: AsyncEngine | None = None,
        lease: HostLease | None = None,
    ) -> None:
        self._engine = engine
        # With a lease, only its holder publishes; the others keep watching the broker (the
        # consumers and /readyz rely on it) and take over when the holder's process ends.
        self._lease = lease
        self._reader = reader or engine
        self._outbox = outbox
        self._pending = outbox.metadata.tables[PENDING_TABLE]
        self._marks = outbox.metadata.tables[PUBLISHED_TABLE]
        # Whether a row may be a bundle of many events (``bundle_row``).
        self._bundles = RECORDS in outbox.c
        # This relay's name in ``outbox_published`` (its own rows: replicas never wait on
        # each other's).
        self._relay_name = f"{client_id[:40]}-{uuid.uuid4().hex[:16]}"
        self._bus_state = bus_state
        self._settings = settings
        self._metrics = metrics
        self._watch = watch
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._wake = asyncio.Event()
        self._last_check = 0.0
        self._last_cleanup = 0.0
        self._force_check = True
        self._postgres = engine.dialect.name == "postgresql"
        self._replay: tuple[int, int] | None = None
        # The sends this relay completed (time, lowest id sent), newest last, and since when
        # the record is whole: a planned rotation's handover is matched against them.
        self._sends: collections.deque[tuple[float, int]] = collections.deque()
        self._sends_whole_since = time.time()
        self._held: tuple[AsyncConnection, Any] | None = None
        self._holding = asyncio.Lock()
        self._pending_rows = self._batch_read()
        self._backlog_span = self._backlog_read()
        self._driver_claim, self._driver_any_pending = self._driver_statements()
        self._pending_span = 0  # the backlog gauge's last reading
        self.published = 0
        # PostgreSQL: rows claimed since the pending table was last vacuumed by this relay.
        self._claimed_unvacuumed = 0
        self._vacuum_every: int | None = _VACUUM_PENDING_EVERY

    def _columns(self) -> tuple[Any, ...]:
        """What a batch reads of a row, in the order ``_send`` takes it (``records`` last, where
        rows may be bundles)."""
        t = self._outbox
        return (
            t.c.id,
            t.c.event_type,
            t.c.topic,
            t.c.key,
            t.c.headers,
            t.c.header_block,
            t.c.payload,
            *([t.c[RECORDS]] if self._bundles else []),
        )

    def _first_ids(self, table: Table, *where: Any) -> Any:
        """The ids of ``table``'s first rows (by id) meeting ``where`` that a batch takes: the
        first ``outbox_batch_size`` rows; where rows may be bundles, as many of those as hold
        fewer events than that before them (at least one row: a bundle larger than a batch
        goes alone), so a batch holds about as many events as one of single rows would."""
        size = self._settings.outbox_batch_size
        first = select(table.c.id)
        if not self._bundles:
            return first.where(*where).order_by(table.c.id).limit(size)
        rows = (
            select(table.c.id, func.coalesce(table.c[RECORDS], 1).label("n"))
            .where(*where)
            .order_by(table.c.id)
            .limit(size)
            .subquery()
        )
        before = func.sum(rows.c.n).over(order_by=rows.c.id) - rows.c.n
        sized = select(rows.c.id, before.label("before")).subquery()
        return select(sized.c.id).where(sized.c.before < size)

    def _batch_read(self) -> Any:
        """SQLite's read of a batch, built once: building a statement and finding its compiled
        form by its cache key cost ~0.1 ms a batch; a kept statement's key is memoized. The
        first pending ids (``_first_ids``), then their rows by primary key."""
        t = self._outbox
        first = self._first_ids(self._pending)
        return select(*self._columns()).where(t.c.id.in_(first)).order_by(t.c.id)

    def _published(self) -> Any:
        """Rows published: those without a pending row."""
        return ~is_pending(self._outbox)

    def _backlog_read(self) -> Any:
        """The backlog gauge's read: the span of the pending ids, from the pending table's
        primary key's first and last entries (two probes), not a count of every pending row
        (9–45 ms a call with a backlog of tens of thousands, every ``broker_check_interval_ms``).
        Rows take their ids from one sequence and are claimed oldest first, so the pending ones
        hold a run of ids: the span is their number while the run has no holes, and more than it
        when it has (ids of inserts rolled back, a later batch claimed while an earlier one is
        still being sent). 0 when nothing is pending."""
        p = self._pending
        return select(func.coalesce(func.max(p.c.id) - func.min(p.c.id) + 1, 0))

    def _driver_statements(self) -> tuple[str, str]:
        """PostgreSQL's claim and pending probe as the driver runs them: through SQLAlchemy's
        asyncio layer (greenlet hand-offs, the adapter's cursor, result processing) BEGIN, the
        claim and COMMIT were ~40 % of the relay's CPU at the batch sizes a service sees.

        The claim deletes the batch's first ``size`` pending rows (``FOR UPDATE SKIP LOCKED``:
        several replicas may relay one database, each takes rows the others have not), records
        the minute of publication with the lowest id of the batch for this relay (``$1``, the
        minute; ``$2``, the relay) and returns the rows' columns that ``_send`` reads, in the
        order of ``_batch_read``: one statement, nothing of it committed before the broker has
        every record. Both tables are reached through their primary keys with an array of the
        ids (``= ANY(ARRAY(...))``): as an ``IN`` list or a join, PostgreSQL hashed the ids and
        read either table whole. The first pending ids are read in the key's order with sorts
        disabled for the claim's transaction (``_CLAIM_BEGIN``): on a table not yet analysed
        (or analysed before a backlog built up) PostgreSQL may reckon reading every pending row
        and sorting them cheaper than the key's first ``size`` entries. Where rows may be
        bundles, of those first ``size`` pending rows (locked) the claim takes as many as
        ``_first_ids`` does, counting events by the pending rows' own ``records``; the rest are
        let go at its commit."""
        name, pending, published = map(
            self._qualified, (self._outbox.name, PENDING_TABLE, PUBLISHED_TABLE)
        )
        size = int(self._settings.outbox_batch_size)
        first = f"SELECT id FROM {pending} ORDER BY id LIMIT {size} FOR UPDATE SKIP LOCKED"
        if self._bundles:
            first = (
                "SELECT id FROM (SELECT id, sum(n) OVER (ORDER BY id) - n AS before FROM "
                f"(SELECT id, coalesce({RECORDS}, 1) AS n FROM {pending} ORDER BY id LIMIT {size} "
                f"FOR UPDATE SKIP LOCKED) AS locked) AS sized WHERE before < {size}"
            )
        columns = ", ".join(f"o.{c.name}" for c in self._columns())
        claim = (
            f"WITH claimed AS (DELETE FROM {pending} WHERE id = ANY(ARRAY({first})) "
            "RETURNING id), "
            f"noted AS (INSERT INTO {published} AS p (published_at, relay, first_id) "
            "SELECT $1::timestamptz, $2::text, min(id) FROM claimed HAVING count(*) > 0 "
            "ON CONFLICT (published_at, relay) DO UPDATE SET first_id = "
            "least(p.first_id, excluded.first_id)) "
            f"SELECT {columns} FROM {name} o WHERE o.id = ANY(ARRAY(SELECT id FROM claimed))"
        )
        return claim, f"SELECT id FROM {pending} ORDER BY id LIMIT 1"

    @contextlib.asynccontextmanager
    async def _driver(self, engine: AsyncEngine) -> AsyncIterator[Any]:
        """PostgreSQL: the relay's own connection to ``engine`` — one of its pool's, checked
        out at the first batch and kept, its asyncpg connection used directly (a checkout and
        return through SQLAlchemy's pool and greenlet for every claim and probe were ~8 % of
        the relay). SQLAlchemy opens no transaction on it (its adapter begins one only at its
        own first statement). A connection the server closed is replaced before use; one that
        saw an error is discarded, so a half-finished exchange is never reused. A reader other
        than the engine, and a use while the kept connection is busy (a probe from another
        task during a batch), take a pooled connection for the time of the use."""
        if engine is not self._engine or self._holding.locked():
            async with engine.connect() as conn:
                yield (await conn.get_raw_connection()).driver_connection
            return
        async with self._holding:
            if self._held is None or self._held[1].is_closed():
                await self._let_go()
                conn = await engine.connect()
                try:
                    self._held = (conn, (await conn.get_raw_connection()).driver_connection)
                except BaseException:
                    await conn.invalidate()
                    await conn.close()
                    raise
            try:
                yield self._held[1]
            except BaseException:
                await self._let_go(invalidate=True)
                raise

    async def _let_go(self, *, invalidate: bool = False) -> None:
        """Return the relay's connection to its pool (closed, if ``invalidate``)."""
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                if invalidate or held[1].is_closed():
                    await held[0].invalidate()
                await held[0].close()

    def wake(self) -> None:
        """Tell the relay new rows were committed (saves waiting for the next poll)."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled; never dies of a broker or database error."""
        try:
            await self._relay_loop()
        finally:
            await self.close()
            if self._lease is not None:
                self._lease.release()

    async def _relay_loop(self) -> None:
        poll = self._settings.outbox_poll_interval_ms / 1000
        failures = 0
        # Straight to a batch on the first pass and after one that found rows (under load the
        # next is seldom empty); after an empty one, ask first: a wake-up may announce nothing
        # (a consumer's fetch with nothing to apply still reports a commit).
        eager = True
        started = 0.0  # when the last batch that found rows began
        quiet = 0  # polls in a row that ended without a wake-up and found nothing
        while True:
            try:
                await self._connect()
                if await self._maybe_check_broker() and self._pending_span:
                    eager = True  # the check read the pending rows' span: no need to ask again
                if self._lease is not None and not self._lease.held():
                    await asyncio.sleep(poll)  # another process of this host publishes
                    continue
                sent = 0
                began = time.monotonic()
                if eager or await self.may_have_work():
                    sent = await self.publish_batch()
                eager = sent > 0
                if eager:
                    started = began
                    quiet = 0
                await self._maybe_cleanup()
                failures = 0
                if sent >= self._settings.outbox_batch_size:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._force_check = True
                self._watch.reachable = False
                eager = True
                log.warning("outbox relay: %s (attempt %d)", exc, failures)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the wake-up fires, and the service would hang on shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_wait(poll, quiet)):
                    await self._wake.wait()
            if not self._wake.is_set() and not eager:
                quiet = min(quiet + 1, 16)
            self._wake.clear()
            await asyncio.sleep(self._linger(eager, started))

    def _idle_wait(self, poll: float, quiet: int) -> float:
        """How long to wait for a wake-up before asking again: ``outbox_poll_interval_ms``, twice
        as long after each poll in a row that found nothing, up to the broker check's interval
        (whose read of the pending rows' span starts a batch when there are any). Every commit
        of this process that writes outbox rows wakes the relay (the consumer's, the group
        committer's, the APIs' and the schedulers'), so the poll only finds rows written by
        another process of the service, which the relay holding the host's lease publishes for
        it: an idle relay (evaluation's outbox is almost always empty) asked five times a
        second and now asks about once, and such a row waits at most the check's interval (1 s)
        after an idle spell instead of the poll's (200 ms)."""
        ceiling = max(poll, self._settings.broker_check_interval_ms / 1000)
        return min(poll * 2**quiet, ceiling)

    def _linger(self, busy: bool, started: float) -> float:
        """Seconds to let commits pile up after a wake-up: one batch of many rows costs far
        less per event than many batches of a few — for the relay, for the broker (a produce
        request, and a record batch a partition that it stores, and that the embedded broker
        lists again at every fetch of that partition) and for the database (a claim and its
        commit). After an idle spell ``outbox_linger_ms``, so a lone event goes out at once;
        while the last batch found rows (under load, a wake-up at every commit) the next one
        starts no sooner than ``outbox_linger_busy_ms`` after it began."""
        linger = self._settings.outbox_linger_ms / 1000
        if not busy:
            return linger
        return max(linger, started + self._settings.outbox_linger_busy_ms / 1000 - time.monotonic())

    async def _connect(self) -> None:
        """Start the Kafka clients; aiokafka refuses to start while the broker is away."""
        if self._admin is None:
            admin = make_admin(self._settings, client_id=f"{self._client_id}-admin")
            try:
                await admin.start()
            except Exception:
                await admin.close()
                raise
            self._admin = admin
        if self._producer is None:
            producer = make_producer(self._settings, client_id=self._client_id)
            try:
                await producer.start()
            except Exception:
                await producer.stop()
                raise
            self._producer = producer

    async def _renew_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        await self._connect()

    async def close(self) -> None:
        """Flush and close the Kafka clients; give the database connection back."""
        await self._let_go()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None

    async def _maybe_check_broker(self) -> bool:
        """Check the broker if its interval has passed (or an error asks for it): whether it
        did."""
        interval = self._settings.broker_check_interval_ms / 1000
        if not self._force_check and time.monotonic() - self._last_check < interval:
            return False
        await self.check_broker()
        return True

    async def check_broker(self) -> None:
        """Ask the broker who it is now; a broker other than the last one is adopted with a new
        producer. The relay does this every ``broker_check_interval_ms`` and after any error."""
        await self._connect()
        assert self._admin is not None
        cluster_id = await fetch_cluster_id(self._admin)
        self._last_check = time.monotonic()
        self._force_check = False
        self._watch.reachable = True
        if cluster_id != self._watch.cluster_id:
            if self._watch.cluster_id is not None:
                # The producer's partition map is the old broker's: tansu acknowledges records
                # sent to a partition its (possibly auto-created, 4-partition) topic lacks and
                # keeps none of them. A new producer reads the new broker's map; what the old one
                # sent since the rotation is in the replay range.
                await self._renew_producer()
            await self.adopt_broker(cluster_id)
        await self._update_backlog()

    async def adopt_broker(self, cluster_id: str) -> int:
        """Start talking to broker ``cluster_id``: create topics and, if it is not the broker this
        database last published to, queue every retained row again. Returns events re-queued."""
        assert self._admin is not None
        await ensure_topics(self._admin, self._settings)
        requeued = 0
        stored_state = select(self._bus_state.c.value).where(self._bus_state.c.name == "cluster_id")
        # A planned rotation's handover is awaited before the transaction, not inside it: the
        # wait (up to ``broker_handover_wait_ms``) is the broker's, and holds no connection.
        async with self._reader.connect() as conn:
            before = (await conn.execute(stored_state)).scalar_one_or_none()
            await conn.rollback()
        handover = None
        if before is not None and before != cluster_id:
            handover = await read_handover(
                self._settings, before, wait=self._settings.broker_handover_wait_ms / 1000
            )
        async with self._engine.begin() as conn:
            stored = (await conn.execute(stored_state)).scalar_one_or_none()
            if stored != cluster_id:
                if stored is not None:
                    # Every row still here is within its window (``purge_expired`` keeps it so);
                    # the rows published so far are replayed — after a planned rotation only
                    # those some consumer may not have read (``shared.rotation``) —, those
                    # pending publish as usual. A handover for another broker than the one
                    # stored now (another relay adopted meanwhile) replays everything.
                    if handover is not None and handover.previous != stored:
                        handover = None
                    first = 0 if handover is None else await self._unread_from(conn, handover)
                    published = self._published()
                    t = self._outbox
                    events = (
                        func.coalesce(func.sum(func.coalesce(t.c[RECORDS], 1)), 0)
                        if self._bundles
                        else func.count()
                    )
                    last, requeued = (
                        await conn.execute(
                            select(func.coalesce(func.max(t.c.id), 0), events)
                            .select_from(t)
                            .where(published, t.c.id >= first)
                        )
                    ).one()
                    after = min(max(first - 1, 0), int(last))
                    self._replay = (after, int(last))
                    await self._store_state(conn, "replay_after", str(after))
                    await self._store_state(conn, "replay_until", str(last))
                    if handover is not None:
                        log.info(
                            "broker %s: %s; replaying from row %d", cluster_id, handover, first
                        )
                await self._store_state(conn, "cluster_id", cluster_id)
        if self._watch.cluster_id is not None:
            self._metrics.broker_epoch_changes.inc()
        log.info("broker %s adopted; %d retained events queued again", cluster_id, requeued)
        self._watch.adopt(cluster_id)
        return int(requeued)

    async def _unread_from(self, conn: AsyncConnection, handover: Handover) -> int:
        """The lowest row id a consumer may not have read, given a rotation's ``handover``:
        every record published at or after ``handover.unread_since`` came from a send that
        completed at or after it. This relay's own sends are in ``_sends`` when their record is
        whole back to that time; anyone else's (a replica, this relay's predecessor) are read
        from the minutes of publication, which a claim stamps before its send, so those are
        taken from ``_CLAIM_TO_SEND`` earlier on. One past the last id when nothing was sent
        since."""
        since = handover.unread_since
        m = self._marks
        cutoff = _minute(datetime.fromtimestamp(since, UTC) - _CLAIM_TO_SEND)
        own = since > self._sends_whole_since
        rows = await conn.execute(
            select(func.min(m.c.first_id))
            .where(m.c.published_at >= cutoff)
            .where(*([m.c.relay != self._relay_name] if own else []))
        )
        firsts = [rows.scalar_one_or_none()]
        if own:
            firsts += [first for done, first in self._sends if done >= since]
        known = [int(f) for f in firsts if f is not None]
        if known:
            return min(known)
        t = self._outbox
        last = (await conn.execute(select(func.coalesce(func.max(t.c.id), 0)))).scalar_one()
        return int(last) + 1

    async def _store_state(self, conn: AsyncConnection, name: str, value: str) -> None:
        values = {"name": name, "value": value, "updated_at": utcnow()}
        result = await conn.execute(
            update(self._bus_state).where(self._bus_state.c.name == name).values(values)
        )
        if not result.rowcount:
            await conn.execute(self._bus_state.insert().values(values))

    async def _replay_position(self) -> tuple[int, int]:
        """(last id replayed, last id to replay) of the replay under way; read once from
        ``bus_state`` so that a restarted relay finishes what its predecessor began."""
        if self._replay is None:
            state = self._bus_state
            async with self._reader.connect() as conn:
                stored = dict(
                    (
                        await conn.execute(
                            select(state.c.name, state.c.value).where(
                                state.c.name.in_(("replay_after", "replay_until"))
                            )
                        )
                    ).all()
                )
                await conn.rollback()
            self._replay = (int(stored.get("replay_after", 0)), int(stored.get("replay_until", 0)))
        return self._replay

    async def may_have_work(self) -> bool:
        """Whether a batch could find anything (pending rows, a replay under way): asked before
        a batch when the last one was empty. On PostgreSQL one read outside a transaction
        answers it — the claim's transaction (BEGIN, the claim, COMMIT) at every poll and every
        wake-up in every service was most of an idle relay's work; SQLite is asked by the batch
        itself."""
        if not self._postgres or self._replay is None or self._replay[0] < self._replay[1]:
            return True
        async with self._driver(self._reader) as driver:
            return await driver.fetchval(self._driver_any_pending) is not None

    @contextlib.asynccontextmanager
    async def _read_alone(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one read: on PostgreSQL outside a transaction (one round trip, not
        BEGIN, the read and ROLLBACK)."""
        async with self._reader.connect() as conn:
            if self._postgres:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
            if not self._postgres:
                await conn.rollback()

    async def replay_batch(self) -> int:
        """Send the next batch of already-published rows to a new broker; how many events were
        sent."""
        after, until = await self._replay_position()
        if after >= until:
            return 0
        t = self._outbox
        first = self._first_ids(t, t.c.id > after, t.c.id <= until, self._published())
        sent = 0
        async with self._reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(*self._columns()).where(t.c.id.in_(first)).order_by(t.c.id)
                )
            ).all()
            await conn.rollback()
        if rows:
            await self._send(rows)
            sent = sum(self._events_by_type(rows).values())
            self._metrics.outbox_republished.inc(sent)
        position = rows[-1][0] if rows else until
        async with self._engine.begin() as conn:
            await self._store_state(conn, "replay_after", str(position))
        self._replay = (position, until)
        return sent

    async def publish_batch(self) -> int:
        """Send up to one batch: replayed rows for a new broker first (they are the older), then
        pending ones; return how many were sent."""
        replayed = await self.replay_batch()
        if replayed:
            return replayed
        if self._postgres:
            # Several replicas may relay one database: each claims rows the others have not.
            # The claim takes the rows' pending rows in the same statement as it reads them (one
            # round trip); that is committed only once the broker has every record, so a failed
            # send rolls it back and the rows stay pending.
            async with self._driver(self._engine) as driver:
                await driver.execute(_CLAIM_BEGIN)
                try:
                    rows: Sequence[Any] = sorted(
                        await driver.fetch(self._driver_claim, _minute(utcnow()), self._relay_name),
                        key=_first,
                    )
                    if rows:
                        await self._send(rows)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await driver.execute("ROLLBACK")
                    raise
                await driver.execute("COMMIT")
                await self._maybe_vacuum_pending(driver, len(rows))
        else:
            async with self._reader.connect() as conn:
                rows = (await conn.execute(self._pending_rows)).all()
                await conn.rollback()
            if rows:
                await self._send(rows)
                async with self._engine.begin() as conn:
                    await self._mark(conn, [r[0] for r in rows])
        if not rows:
            return 0
        # One ``labels()`` (a lock and a key) per event type of the batch, not per row.
        produced = self._events_by_type(rows)
        for event_type, count in produced.items():
            self._metrics.events_produced.labels(event_type).inc(count)
        sent = sum(produced.values())
        self.published += sent
        return sent

    def _events_by_type(self, rows: Sequence[Any]) -> collections.Counter[str]:
        """How many events rows hold, by type (a bundle holds ``records`` of its type)."""
        if not self._bundles:
            return collections.Counter(r[1] for r in rows)
        counts: collections.Counter[str] = collections.Counter()
        for r in rows:
            counts[r[1]] += r[7] or 1
        return counts

    def _qualified(self, table: str) -> str:
        """``table`` of the outbox's schema, quoted for the driver's own statements."""
        schema = self._outbox.schema
        return f'"{schema}"."{table}"' if schema else f'"{table}"'

    async def _maybe_vacuum_pending(self, driver: Any, claimed: int) -> None:
        """PostgreSQL: ``VACUUM`` the pending table after every ``_VACUUM_PENDING_EVERY`` rows
        claimed. Each claimed row leaves a dead entry at the left end of the table's key, where
        the claim, the pending probe and the backlog gauge all start: until a vacuum removes
        them each of those walks every one (100,000 dead entries: 0.4–0.5 ms a probe against
        0.02 after a vacuum), and a server without autovacuum, or one that vacuums a table of a
        few live rows seldom, leaves them for hours. The table is small (ids), so a vacuum costs
        little; ``SKIP_LOCKED`` skips it when another holds the table. A role that may not
        vacuum the table (not its owner) stops trying, once, with a warning."""
        if self._vacuum_every is None:
            return
        self._claimed_unvacuumed += claimed
        if self._claimed_unvacuumed < self._vacuum_every:
            return
        self._claimed_unvacuumed = 0
        try:
            await driver.execute(f"VACUUM (SKIP_LOCKED) {self._qualified(PENDING_TABLE)}")
        except Exception as exc:  # a vacuum is upkeep: never the relay's failure
            log.warning("outbox relay: not vacuuming %s any more: %s", PENDING_TABLE, exc)
            self._vacuum_every = None

    async def _send(self, rows: Sequence[Any]) -> None:
        """Publish rows (in id order) and return once the broker has acknowledged every one:
        each topic's rows go out as one batch per partition, in id order within it."""
        assert self._producer is not None
        by_topic: dict[str, list[Outgoing]] = {}
        # Rows are (id, event_type, topic, key, headers, header_block, payload[, records]):
        # SQLAlchemy's rows on SQLite and in a replay, asyncpg's records from the PostgreSQL
        # claim. A bundle's records go out in its place, in its order.
        for row in rows:
            logical, payload = row[2], row[6]
            records = by_topic.get(logical)
            if records is None:
                records = by_topic[logical] = []
            if self._bundles and row[7] is not None:
                records += unpack_bundle(payload)
                continue
            block = row[5]
            records.append(
                (
                    row[3].encode(),
                    payload,
                    unpack_headers(block) if block is not None else row_headers(row[4], None),
                )
            )
        batches = []
        for logical, records in by_topic.items():
            topic = topic_name(self._settings, logical)
            batches += await partition_batches(self._producer, topic, records)
        await send_batches(self._producer, batches)
        if rows:
            self._sent(rows[0][0])

    def _sent(self, first_id: int) -> None:
        """Note a completed send whose lowest row id (its first: rows go out in id order) was
        ``first_id``: every record of it was stamped (the producer's clock) no later than now."""
        if len(self._sends) >= _SENDS_KEPT:
            self._sends_whole_since = self._sends.popleft()[0]
        self._sends.append((time.time(), first_id))

    async def _mark(self, conn: AsyncConnection, ids: list[int]) -> None:
        """SQLite: the rows sent are published, their minute recorded (PostgreSQL's claim does
        both)."""
        p = self._pending
        for chunk in bulk.chunks(ids):
            await conn.execute(p.delete().where(p.c.id.in_(chunk)))
        mark = sqlite_insert(self._marks).values(
            published_at=_minute(utcnow()), relay=self._relay_name, first_id=min(ids)
        )
        await conn.execute(
            mark.on_conflict_do_update(
                index_elements=["published_at", "relay"],
                set_={"first_id": func.min(self._marks.c.first_id, mark.excluded.first_id)},
            )
        )

    async def _update_backlog(self) -> None:
        async with self._read_alone() as conn:
            backlog = (await conn.execute(self._backlog_span)).scalar_one()
        self._pending_span = int(backlog)
        self._metrics.outbox_backlog.set(backlog)

    async def _maybe_cleanup(self) -> None:
        if time.monotonic() - self._last_cleanup < 60:
            return
        self._last_cleanup = time.monotonic()
        await self.purge_expired()

    async def requeue_since(self, since: datetime) -> int:
        """Queue every retained event created at or after ``since`` to be published again; how
        many events were queued."""
        t = self._outbox
        insert = pg_insert if self._postgres else sqlite_insert
        chosen = [t.c.id, *([t.c[RECORDS]] if self._bundles else [])]
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(self._pending)
                .from_select(
                    [c.name for c in chosen],
                    select(*chosen).where(t.c.created_at >= since, self._published()),
                )
                .on_conflict_do_nothing()
                .returning(*[self._pending.c[c.name] for c in chosen])
            )
            queued = result.all()
        self.wake()
        count = sum((r[1] or 1) if self._bundles else 1 for r in queued)
        self._metrics.outbox_republished.inc(count)
        return count

    def purge_statements(self, cutoff: datetime) -> tuple[Any, Any]:
        """The purge's two statements for ``cutoff``: the rows, then the minutes before it."""
        before = cutoff - timedelta(minutes=1)
        t, m = self._outbox, self._marks
        recent = select(func.min(m.c.first_id)).where(m.c.published_at > before)
        rows = t.delete().where(
            t.c.id < func.coalesce(recent.scalar_subquery(), _NO_ID), self._published()
        )
        return rows, m.delete().where(m.c.published_at <= before)

    async def purge_plan(self, conn: AsyncConnection) -> None:
        """PostgreSQL: the purge's transaction reads the outbox by its primary key. The bound is
        the minutes' subquery, unknown when the statement is planned, so the planner reckons a
        third of the table below it — and without statistics (autovacuum off, or not yet
        analysed) it read the whole outbox at every purge, once a minute, a table that holds the
        retention window's days of events; the rows below the bound are the ones to delete."""
        if self._postgres:
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")

    async def purge_expired(self) -> int:
        """Delete rows published longer ago than the retention window: those not pending below
        the lowest first id of the minutes of publication since the cutoff (a minute that
        began less than a minute before it counts: it may hold publications after it), or every
        row not pending if nothing was published since; then the minutes before the cutoff. One
        statement reads the minutes and deletes (one snapshot: a claim committed meanwhile is
        seen whole or not at all), through the outbox's primary key (``purge_plan``)."""
        purge, minutes = self.purge_statements(
            utcnow() - timedelta(days=self._settings.outbox_retention_days)
        )
        async with self._engine.begin() as conn:
            await self.purge_plan(conn)
            result = await conn.execute(purge)
            await conn.execute(minutes)
        return result.rowcount or 0
