"""Inbox consumer: apply each event once, in the same transaction as the inbox row that says so.

A fetched batch is applied together: one transaction, one inbox look-up for all its event ids,
consecutive events of a batch handler (``Batch``) handed over as one list, one multi-row insert
of inbox rows (none for a handler whose own rows are the record, ``Batch.inbox_rows``). If
anything in it fails, the transaction is rolled back and the same records are applied one by
one, each in a savepoint of its own, so a poison event fails alone.

Offsets are committed only after the database commit. A delivery whose event id the inbox
already holds is skipped and counted. A handler that keeps failing is retried with backoff and,
after ``consumer_max_tries``, its record goes to the dead-letter topic (through the outbox, so
that too is transactional) and the consumer moves on. A record that does not decode is
dead-lettered at once: retrying cannot fix it.

A ``Batch`` handler that stages (``Batch.stage``: reads and computes first, writes later) is
pipelined on PostgreSQL (``Pipeline``): while one fetch's writes and commit are in flight on its
connection, the next fetch is staged on another, given what the first will have written (its
``carry``) where the database does not show it yet. If the fetch in flight fails, the staged
one is thrown away, its records fetched again, and the failed fetch redone alone (as above).

A database that cannot be reached (refused, dropped, locked past the busy timeout) is not the
message's fault: such a failure burns none of its tries; the consumer pauses until the database
answers again and then redelivers from the record it was on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import Table, select
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared import bulk, db
from shared.bus import BrokerWatch, consumer_group_id, make_consumer, start_consumer, topic_name
from shared.events import DEAD_LETTER_TOPIC
from shared.events.base import (
    Event,
    EventDecodeError,
    Record,
    UnknownEventType,
    decode,
    header,
    registry,
    utcnow,
)
from shared.logs import log_context
from shared.metrics import ServiceMetrics
from shared.outbox import record_row
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[None]]
"""``async def handle(event, *, session) -> None``: write through the session, never commit."""


class Stage(Protocol):
    """A fetch staged by ``Batch.stage``: read and computed, its writes not sent yet."""

    @property
    def carry(self) -> Any:
        """What the next fetch, staged while this one's writes are in flight, must be given
        in place of the database (which shows none of it until this one commits)."""

    @property
    def applied(self) -> Sequence[str]:
        """The ids of the events ``write`` applies (known once staged: the consumer writes
        their inbox rows then, in the same transaction, rather than after the writes)."""

    async def write(self, session: AsyncSession) -> Any:
        """Send the writes through ``session`` (the one it was staged on; not committed).
        Returns what ``many`` returns."""


@dataclass(frozen=True)
class Batch:
    """A handler that takes a list: ``async def many(events, *, session) -> None``.

    Consecutive deliveries of the event types mapped to one ``Batch`` are handed over together
    (in delivery order, duplicates already dropped); one by one, the list holds one event.

    A handler that itself refuses an event id it has applied before (a ledger keyed by event
    id) says so with ``deduplicates``: it returns the ids of the events it applied, and a
    batch's events go to it without the inbox look-up — the refusal in its own write is the
    look-up, in the same statement. Whatever it did not apply is counted as a duplicate.

    A deduplicating handler may also ``stage``: ``async def stage(events, *, session, carry)
    -> Stage``, ``many`` in two halves — the reads, the duplicates refused and what to write
    (given ``carry``, the ``Stage.carry`` of the fetch before when its writes may still be
    uncommitted, else None), then ``Stage.write``. The consumer then pipelines its fetches
    (``Pipeline``; PostgreSQL only).

    A deduplicating handler whose own rows are the whole record of what it applied — it refuses
    a redelivered event by them whatever its event id, as dispatch refuses a ticket it has
    routed by the ticket's row — says so with ``inbox_rows=False``: the events it applies get
    no inbox row (a statement a fetch and a row an event that nothing reads). An event it
    cannot apply is still dead-lettered with an inbox row saying so."""

    many: Callable[..., Awaitable[Any]]
    deduplicates: bool = False
    stage: Callable[..., Awaitable[Stage]] | None = None
    inbox_rows: bool = True

    def __post_init__(self) -> None:
        if not self.inbox_rows and not self.deduplicates:
            raise ValueError(
                "Batch(inbox_rows=False) needs deduplicates=True: without inbox rows only the"
                " handler itself can refuse a redelivered event"
            )

    async def __call__(self, event: Event, *, session: AsyncSession) -> None:
        """One event alone."""
        await self.many([event], session=session)


@dataclass
class _InFlight:
    session: AsyncSession
    carry: Any
    context: Any
    task: asyncio.Task[Any] | None = None
    closed: bool = False


class Pipeline:
    """Two fetches of a staging ``Batch`` handler at once: while one fetch's writes and commit
    are in flight (a task of their own, on the connection it was staged on), the next is staged
    — its reads on a second connection, its computing in this process, which the first's
    awaits leave free — given the first's ``carry`` for what the database does not show yet.

    A carry is valid only if its fetch commits: it is passed on only while that fetch is in
    flight (once committed, the database shows it all), and dropped if it fails; the caller
    must then throw away (``discard``) whatever it staged meanwhile, and redo both."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._inflight: _InFlight | None = None

    @property
    def busy(self) -> bool:
        """True while a fetch's writes are in flight (not yet ``settle``d)."""
        return self._inflight is not None

    @property
    def context(self) -> Any:
        """The ``context`` the fetch in flight was launched with (None if there is none)."""
        return self._inflight.context if self._inflight is not None else None

    async def stage(self, handler: Batch, events: Sequence[Event]) -> tuple[AsyncSession, Stage]:
        """Open a transaction and stage ``events`` in it; rolled back if staging fails."""
        if handler.stage is None:
            raise TypeError("the handler does not stage")
        carry = self._inflight.carry if self._inflight is not None else None
        session = self._sessions()
        try:
            await session.begin()
            stage = await handler.stage(events, session=session, carry=carry)
        except BaseException:
            await session.close()
            raise
        return session, stage

    def launch(
        self,
        staged: tuple[AsyncSession, Stage],
        *,
        then: Callable[[AsyncSession, Any], Awaitable[None]] | None = None,
        context: Any = None,
    ) -> None:
        """Send a staged fetch's writes and commit them, in a task: ``then(session, written)``
        runs in the same transaction after the handler's writes. One fetch in flight at once."""
        if self._inflight is not None:
            raise RuntimeError("a fetch is in flight: settle it first")
        session, stage = staged
        flight = _InFlight(session=session, carry=stage.carry, context=context)
        flight.task = asyncio.ensure_future(self._write(flight, stage, then))
        self._inflight = flight

    @staticmethod
    async def _write(
        flight: _InFlight,
        stage: Stage,
        then: Callable[[AsyncSession, Any], Awaitable[None]] | None,
    ) -> Any:
        session = flight.session
        try:
            written = await stage.write(session)
            if then is not None:
                await then(session, written)
            await session.commit()
            return written
        finally:
            flight.closed = True
            await session.close()

    async def settle(self) -> Any:
        """Wait for the fetch in flight to commit; what its ``write`` returned (None if none
        was in flight). Raises its failure; either way its carry is gone."""
        inflight, self._inflight = self._inflight, None
        if inflight is None or inflight.task is None:
            return None
        return await inflight.task

    @staticmethod
    async def discard(staged: tuple[AsyncSession, Stage]) -> None:
        """Roll back a staged fetch that will not be launched."""
        await staged[0].close()

    async def close(self) -> None:
        """Stop: the fetch in flight is cancelled (rolled back unless its commit got through;
        its records are delivered again either way, and refused as duplicates if it did)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None or inflight.task is None:
            return
        inflight.task.cancel()
        await asyncio.wait([inflight.task])
        if not inflight.task.cancelled():
            inflight.task.exception()  # retrieved: it is not this caller's failure
        if not inflight.closed:  # cancelled before it started
            await inflight.session.close()


@dataclass(frozen=True)
class Only:
    """A handler for only some events of its type: an event ``when`` refuses changes nothing
    in this service, so it is passed over before the inbox look-up and gets no inbox row
    (delivered again, it is refused again; nothing was written either time). Mediation, say,
    reads every ``TicketAssigned`` and acts on the few sent down the mediation line; looking
    up and recording the rest was most of its database work."""

    handler: Handler | Batch
    when: Callable[[Any], bool]
    # A look at the record's payload bytes before they are decoded: False only for a record
    # whose event ``when`` is sure to refuse (it is then passed over undecoded, and counted as
    # passed over; decoding an event to refuse it was most of what mediation did a ticket).
    # True sends the record on to decoding and ``when`` as before. A record it screens out is
    # not decoded, so a malformed one of that type is passed over rather than dead-lettered,
    # as a record of a type this service does not act on is.
    screen: Callable[[bytes], bool] | None = None

    async def __call__(self, event: Event, *, session: AsyncSession) -> None:
        """One event alone: applied if ``when`` accepts it."""
        if self.when(event):
            await self.handler(event, session=session)


HandlerMap = Mapping[type[Event], Handler | Batch | Only]


def _deduplicates(handler: Handler | Batch) -> bool:
    return isinstance(handler, Batch) and handler.deduplicates


def _inbox_rows(handler: Handler | Batch) -> bool:
    """True if the events ``handler`` applies get inbox rows (all but ``inbox_rows=False``)."""
    return not isinstance(handler, Batch) or handler.inbox_rows


# A decoded record to apply: the record, its event, the handler, and the event's id as text
# (made once here: the look-up, the repeats, the handler's answer and the inbox row all use it).
_Todo = tuple[ConsumerRecord, Event, "Handler | Batch", str]


@dataclass
class _Plan:
    """A run of records decoded: what to apply, what to dead-letter, what to skip."""

    todo: list[_Todo] = field(default_factory=list)
    undecodable: list[tuple[ConsumerRecord, str]] = field(default_factory=list)


def _unique(plan: _Plan) -> tuple[list[_Todo], list[Event]]:
    """A plan's events to hand over, each event id once, and the repeats."""
    seen: set[str] = set()
    fresh: list[_Todo] = []
    repeats: list[Event] = []
    for item in plan.todo:
        event_id = item[3]
        if event_id in seen:
            repeats.append(item[1])
        else:
            seen.add(event_id)
            fresh.append(item)
    return fresh, repeats


@dataclass
class _Fetch:
    """A pipelined fetch in flight: what to commit and count once its database commit is in."""

    batches: Mapping[TopicPartition, list[ConsumerRecord]]
    assignment: frozenset[TopicPartition]
    plan: _Plan
    fresh: list[_Todo]
    duplicates: list[Event]

    async def record_inbox(
        self, consumer: InboxConsumer, session: AsyncSession, applied_ids: Iterable[str]
    ) -> None:
        """The inbox rows of the events the handler applies, in its transaction: written while
        the fetch is staged (the fetch before may still be in flight; their event ids differ,
        as the carry keeps the one's events out of the other), off the path its commit waits
        on."""
        ids = set(applied_ids)
        await bulk.upsert(
            session,
            consumer._inbox,
            [
                consumer._inbox_row(r, i, e.event_type, "applied")
                for r, e, h, i in self.fresh
                if i in ids and _inbox_rows(h)
            ],
            key=["consumer", "event_id"],
            on_conflict=bulk.OnConflict.NOTHING,
        )


_SQLITE_TRANSIENT = ("locked", "busy", "unable to open")


def database_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the database could not be reached or was busy
    — a condition that passes — rather than that the work itself was refused."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.OperationalError):
            # SQLite says "no such table" with the same class as "database is locked".
            return any(word in str(current) for word in _SQLITE_TRANSIENT)
        if isinstance(current, OSError | DisconnectionError | InterfaceError):
            return True  # OSError covers refused / reset connections and timeouts
        if isinstance(current, OperationalError) and not isinstance(
            current.orig, sqlite3.OperationalError
        ):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(
            current,
            asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.CannotConnectNowError
            | asyncpg.AdminShutdownError
            | asyncpg.TooManyConnectionsError,
        ):
            return True
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else current.__cause__ or current.__context__
        )
    return False


class _Failed(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        self.error = error


class InboxConsumer:
    """Consumes topics for one service (its group id) and applies events through handlers."""

    def __init__(
        self,
        *,
        name: str,
        topics: tuple[str, ...],
        handlers: HandlerMap,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        inbox: Table,
        outbox: Table,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        watch: BrokerWatch,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._topics = tuple(topic_name(settings, t) for t in topics)
        self._handlers = {cls.cloudevent_type(): (cls, fn) for cls, fn in handlers.items()}
        self._known = frozenset(registry())
        self._screens = {
            kind: (cls.event_type, fn.screen)
            for kind, (cls, fn) in self._handlers.items()
            if isinstance(fn, Only) and fn.screen is not None
        }
        self._engine = engine
        self._sessions = sessions
        self._inbox = inbox
        self._outbox = outbox
        self._settings = settings
        self._metrics = metrics
        self._watch = watch
        self._on_commit = on_commit
        self._tries: dict[tuple[str, int, int], int] = {}
        # Staging handlers are pipelined on PostgreSQL; SQLite has one writer at a time, so a
        # second transaction could not stage while the first writes.
        self._pipelines = (
            frozenset(
                h
                for h in handlers.values()
                if isinstance(h, Batch) and h.deduplicates and h.stage is not None
            )
            if engine.dialect.name == "postgresql"
            else frozenset()
        )
        self.joined = asyncio.Event()
        self.applied = 0
        self.paused = False  # waiting for the database to come back

    async def run(self) -> None:
        """Consume until cancelled; rejoin whenever the broker changes identity."""
        while self._watch.cluster_id is None:
            await self._watch.wait_changed()
        while True:
            epoch = self._watch.epoch
            consumer = make_consumer(
                self._settings,
                *self._topics,
                group_id=consumer_group_id(
                    self._settings, self.name, self._watch.cluster_id or "unknown"
                ),
                client_id=f"{self.name}-consumer",
            )
            try:
                await start_consumer(consumer, self._settings, *self._topics)
                await self._consume(consumer, epoch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer %s: %s; rejoining", self.name, exc)
                await asyncio.sleep(1.0)
            finally:
                self.joined.clear()
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer, epoch: int) -> None:
        if self._pipelines:
            await self._consume_pipelined(consumer, epoch)
            return
        while self._watch.epoch == epoch:
            batches = await consumer.getmany(
                timeout_ms=200, max_records=self._settings.consumer_batch_max_records
            )
            if consumer.assignment():
                self.joined.set()
            if self._watch.epoch != epoch:
                return
            await self._apply_serially(consumer, batches, epoch)

    async def _apply_serially(
        self,
        consumer: AIOKafkaConsumer,
        batches: Mapping[TopicPartition, list[ConsumerRecord]],
        epoch: int,
    ) -> None:
        """Apply a fetch in one transaction, else partition by partition (isolating a failure)."""
        if len(batches) > 1 and await self._apply_fetch(consumer, batches):
            return
        for tp, records in batches.items():
            if self._watch.epoch != epoch:
                return
            await self._process_partition(consumer, tp, records)

    async def _consume_pipelined(self, consumer: AIOKafkaConsumer, epoch: int) -> None:
        """As ``_consume``, with the fetches of a staging ``Batch`` handler pipelined: fetch N+1
        is staged while N's writes and commit are in flight, then N is settled (its offsets
        committed after its database commit), then N+1 launched. If N did not commit, N+1's
        staging (which read N's carry) is rolled back and its records fetched again, and N is
        redone alone. A fetch with other handlers' events, or after the assignment changed (a
        rebalance), waits for the one in flight and is applied as ``_consume`` would: no carry
        crosses a rebalance."""
        pipe = Pipeline(self._sessions)
        try:
            while self._watch.epoch == epoch:
                batches = await consumer.getmany(
                    timeout_ms=0 if pipe.busy else 200,
                    max_records=self._settings.consumer_batch_max_records,
                )
                assignment = frozenset(consumer.assignment())
                if assignment:
                    self.joined.set()
                if self._watch.epoch != epoch:
                    break
                if not batches:
                    await self._settle(consumer, pipe, epoch, refetch={})
                    continue
                plan = self._plan([r for records in batches.values() for r in records])
                handler = self._stager(plan)
                flight = pipe.context
                if handler is None or (flight is not None and flight.assignment != assignment):
                    if await self._settle(consumer, pipe, epoch, refetch=batches):
                        await self._apply_serially(consumer, batches, epoch)
                    continue
                fresh, duplicates = _unique(plan)
                flight = _Fetch(batches, assignment, plan, fresh, duplicates)
                staged: tuple[AsyncSession, Stage] | None = None
                try:
                    staged = await pipe.stage(handler, [item[1] for item in fresh])
                    await flight.record_inbox(self, staged[0], staged[1].applied)
                except BaseException as exc:
                    if staged is not None:
                        await pipe.discard(staged)
                        staged = None
                    if not isinstance(exc, Exception):
                        raise
                    log.info("consumer %s: fetch not staged (%r)", self.name, exc)
                try:
                    settled = await self._settle(consumer, pipe, epoch, refetch=batches)
                except BaseException:
                    if staged is not None:
                        await pipe.discard(staged)  # its ledger rows must not stay locked
                    raise
                if not settled:
                    if staged is not None:
                        await pipe.discard(staged)  # staged on a carry that never committed
                    continue
                if staged is None:
                    await self._apply_serially(consumer, batches, epoch)
                    continue
                pipe.launch(staged, context=flight)
            await self._settle(consumer, pipe, epoch, refetch={})
        finally:
            await pipe.close()

    def _stager(self, plan: _Plan) -> Batch | None:
        """The staging ``Batch`` handler every event of ``plan`` goes to, if there is one."""
        handlers = {id(item[2]): item[2] for item in plan.todo}
        if len(handlers) != 1:
            return None
        (handler,) = handlers.values()
        return handler if isinstance(handler, Batch) and handler in self._pipelines else None

    async def _settle(
        self,
        consumer: AIOKafkaConsumer,
        pipe: Pipeline,
        epoch: int,
        *,
        refetch: Mapping[TopicPartition, list[ConsumerRecord]],
    ) -> bool:
        """Wait for the fetch in flight: committed, commit its offsets and count it (True).
        Not committed: seek ``refetch`` (the fetch after it, staged on its carry) back to be
        fetched again, then redo the failed fetch alone, as an unpipelined one (False)."""
        flight = pipe.context
        if flight is None:
            return True
        try:
            applied_ids = await pipe.settle()
        except Exception as exc:
            log.info("consumer %s: fetch not committed (%r); redoing it", self.name, exc)
            for tp, records in refetch.items():
                consumer.seek(tp, records[0].offset)
            await self._apply_serially(consumer, flight.batches, epoch)
            return False
        await consumer.commit(
            {tp: records[-1].offset + 1 for tp, records in flight.batches.items()}
        )
        ids = set(applied_ids)
        applied = [item for item in flight.fresh if item[3] in ids]
        duplicates = flight.duplicates + [e for _, e, _, i in flight.fresh if i not in ids]
        await self._applied(flight.plan, applied, duplicates)
        return True

    async def _apply_fetch(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, list[ConsumerRecord]]
    ) -> bool:
        """Apply what one fetch brought from several partitions in one transaction and commit
        every partition's offset. False (nothing stored) if that failed: the caller then goes
        partition by partition, which isolates the failure."""
        plan = self._plan([r for records in batches.values() for r in records])
        try:
            if plan.todo or plan.undecodable:  # else nothing here to act on: no transaction
                await self._apply_together(plan)
        except Exception as exc:
            log.info("consumer %s: fetch not applied together (%r)", self.name, exc)
            return False
        await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
        return True

    async def _process_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> None:
        start = 0
        while start < len(records):
            try:
                done = await self._apply(records[start:])
            except _Failed as failure:
                done = failure.index
                record = records[start + failure.index]
                if database_unreachable(failure.error):
                    if done:
                        await consumer.commit({tp: records[start + done - 1].offset + 1})
                    consumer.seek(tp, record.offset)
                    await self._wait_for_database(failure.error)
                    return
                if await self._should_dead_letter(record, failure.error):
                    await self._dead_letter(record, repr(failure.error), "handler_failed")
                    done += 1
                else:
                    if done:
                        await consumer.commit({tp: records[start + done - 1].offset + 1})
                    consumer.seek(tp, record.offset)  # redeliver from here after the backoff
                    return
            except Exception as exc:
                # The transaction itself (begin, inbox look-up, commit) could not reach the
                # database: nothing of this run is known to be stored, so redeliver all of it.
                if not database_unreachable(exc):
                    raise
                consumer.seek(tp, records[start].offset)
                await self._wait_for_database(exc)
                return
            if done:
                await consumer.commit({tp: records[start + done - 1].offset + 1})
            start += done

    async def _wait_for_database(self, error: BaseException) -> None:
        """Pause until the database answers again, backing off; no message is blamed for it."""
        log.warning("consumer %s: database unreachable (%r); pausing", self.name, error)
        self.paused = True
        delay = self._settings.consumer_backoff_ms / 1000
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    await db.ping(self._engine)
                except Exception as exc:
                    if not database_unreachable(exc):
                        raise
                    delay = min(delay * 2, self._settings.consumer_backoff_max_ms / 1000)
                    continue
                log.warning("consumer %s: database reachable again; resuming", self.name)
                return
        finally:
            self.paused = False

    def _plan(self, records: Sequence[ConsumerRecord]) -> _Plan:
        """Decode records and pick each one's handler; a type this service does not act on
        needs nothing."""
        plan = _Plan()
        passed_over: Counter[str] = Counter()
        for record in records:
            if self._ignored(record, passed_over):
                continue
            try:
                event = decode(record.value, record.headers, record.key)
            except (EventDecodeError, UnknownEventType) as exc:
                plan.undecodable.append((record, str(exc)))
                continue
            handler = self._handler_for(event, passed_over)
            if handler is not None:
                plan.todo.append((record, event, handler, str(event.event_id)))
        _count(self._metrics.events_passed_over, passed_over)
        return plan

    def _handler_for(self, event: Event, passed_over: Counter[str]) -> Handler | Batch | None:
        """The handler that acts on ``event``, or None: a type this service does not act on, or
        an event its ``Only`` handler passes over (added to ``passed_over``)."""
        entry = self._handlers.get(event.cloudevent_type())
        if entry is None:
            return None
        handler = entry[1]
        if isinstance(handler, Only):
            if not handler.when(event):
                passed_over[event.event_type] += 1
                return None
            return handler.handler
        return handler

    def _ignored(self, record: ConsumerRecord, passed_over: Counter[str]) -> bool:
        """True for a record of a known type this service does not act on: skipped from its
        header alone (mediation, say, reads every dispatch event and acts on one type; decoding
        the others was most of its CPU). Unknown types still go through decoding, and so to the
        dead-letter topic. Also True, and added to ``passed_over``, for a record its ``Only``
        handler's ``screen`` turns away by its payload's bytes."""
        kind = header(record.headers or (), "ce_type")
        if kind is None:
            return False
        screened = self._screens.get(kind)
        if screened is not None:
            event_type, screen = screened
            if not screen(record.value or b""):
                passed_over[event_type] += 1
                return True
            return False
        return kind in self._known and kind not in self._handlers

    async def _apply(self, records: list[ConsumerRecord]) -> int:
        """Apply records, together if they can be, else one by one. Returns how many records
        were handled; raises ``_Failed`` for the first that failed, after committing the ones
        before it."""
        plan = self._plan(records)
        if not plan.todo and not plan.undecodable:
            return len(records)  # nothing here to act on: no transaction at all
        if len(plan.todo) > 1:
            try:
                await self._apply_together(plan)
            except Exception as exc:
                log.info("consumer %s: batch not applied together (%r)", self.name, exc)
            else:
                return len(records)
        return await self._apply_one_by_one(records)

    async def _apply_together(self, plan: _Plan) -> None:
        """Apply a plan in one transaction: one inbox look-up (none for a deduplicating
        handler's events), runs of a ``Batch`` handler handed over as lists, one insert of
        inbox rows. All or nothing."""
        duplicates: list[Event] = []
        fresh: list[_Todo] = []
        applied: list[_Todo] = []
        async with self._sessions() as session, session.begin():
            looked_up = [i for _, _, h, i in plan.todo if not _deduplicates(h)]
            seen = await self._seen(session, looked_up) if looked_up else set()
            for item in plan.todo:
                event_id = item[3]
                if event_id in seen:
                    duplicates.append(item[1])
                    continue
                seen.add(event_id)
                fresh.append(item)
            start = 0
            while start < len(fresh):
                entry = fresh[start][2]
                end = start + 1
                if isinstance(entry, Batch):
                    while end < len(fresh) and fresh[end][2] is entry:
                        end += 1
                    run = fresh[start:end]
                    done = await entry.many([item[1] for item in run], session=session)
                    if entry.deduplicates:
                        ids = set(done)
                        for item in run:
                            if item[3] in ids:
                                applied.append(item)
                            else:
                                duplicates.append(item[1])
                    else:
                        applied += run
                else:
                    event = fresh[start][1]
                    with log_context(
                        event_id=fresh[start][3], ticket_id=getattr(event, "ticket_id", None)
                    ):
                        await entry(event, session=session)
                    applied.append(fresh[start])
                start = end
            # A deduplicating handler's event may have an inbox row already (it was not
            # looked up): that row stays.
            await bulk.upsert(
                session,
                self._inbox,
                [
                    self._inbox_row(r, i, e.event_type, "applied")
                    for r, e, h, i in applied
                    if _inbox_rows(h)
                ],
                key=["consumer", "event_id"],
                on_conflict=bulk.OnConflict.NOTHING,
            )
        await self._applied(plan, applied, duplicates)

    async def _applied(
        self,
        plan: _Plan,
        applied: Sequence[_Todo],
        duplicates: Sequence[Event],
    ) -> None:
        """After a plan's commit: count it, and dead-letter what did not decode."""
        _count(self._metrics.events_duplicate, Counter(e.event_type for e in duplicates))
        _count(self._metrics.events_consumed, Counter(item[1].event_type for item in applied))
        self.applied += len(applied)
        if self._on_commit is not None:
            self._on_commit()
        for record, reason in plan.undecodable:
            await self._dead_letter(record, reason, "undecodable")

    async def _seen(self, session: AsyncSession, event_ids: list[str]) -> set[str]:
        """Which of these event ids the inbox already holds (applied or dead-lettered)."""
        ids = self._inbox.c.event_id
        found: set[str] = set()
        # One array parameter on PostgreSQL (``bulk.among``): an IN list of n parameters is a
        # new statement to parse and plan for every n, and was most of evaluation's database
        # time under load.
        for among in bulk.among(session, ids, event_ids):
            rows = await session.execute(
                select(ids).where(self._inbox.c.consumer == self.name, among)
            )
            found.update(rows.scalars())
        return found

    async def _apply_one_by_one(self, records: list[ConsumerRecord]) -> int:
        """Apply records in one transaction, one savepoint each; stop at the first failure after
        committing the ones before it. Returns how many records were handled."""
        handled = 0
        undecodable: list[tuple[ConsumerRecord, str]] = []
        failure: _Failed | None = None
        # Counted once the transaction has committed, as ``_apply_together`` counts: a commit
        # that does not get through redelivers the whole run, which would count it again.
        duplicates: list[str] = []
        consumed: list[str] = []
        passed_over: Counter[str] = Counter()
        async with self._sessions() as session, session.begin():
            for index, record in enumerate(records):
                if self._ignored(record, passed_over):
                    handled += 1
                    continue
                try:
                    event = decode(record.value, record.headers, record.key)
                except (EventDecodeError, UnknownEventType) as exc:
                    undecodable.append((record, str(exc)))
                    handled += 1
                    continue
                handler = self._handler_for(event, passed_over)
                if handler is None:
                    handled += 1  # a type or an event this service does not act on
                    continue
                event_id = str(event.event_id)
                if await self._seen(session, [event_id]):
                    duplicates.append(event.event_type)
                    handled += 1
                    continue
                refused = False
                try:
                    with log_context(
                        event_id=event_id, ticket_id=getattr(event, "ticket_id", None)
                    ):
                        async with session.begin_nested():
                            if isinstance(handler, Batch) and handler.deduplicates:
                                # Its own refusal is the look-up (an event without an inbox
                                # row was not looked up above): a duplicate, not consumed.
                                done = await handler.many([event], session=session)
                                refused = event_id not in set(done)
                            else:
                                await handler(event, session=session)
                            if _inbox_rows(handler) and not refused:
                                await session.execute(
                                    self._inbox.insert().values(
                                        self._inbox_row(
                                            record, event_id, event.event_type, "applied"
                                        )
                                    )
                                )
                except Exception as exc:
                    self._metrics.events_failed.labels(event.event_type).inc()
                    log.warning(
                        "handler for %s failed: %r",
                        event.event_type,
                        exc,
                        extra={
                            "event_id": event_id,
                            "ticket_id": getattr(event, "ticket_id", None),
                        },
                    )
                    failure = _Failed(index, exc)
                    break
                (duplicates if refused else consumed).append(event.event_type)
                handled += 1
        _count(self._metrics.events_passed_over, passed_over)
        _count(self._metrics.events_duplicate, Counter(duplicates))
        _count(self._metrics.events_consumed, Counter(consumed))
        self.applied += len(consumed)
        if handled and self._on_commit is not None:
            self._on_commit()
        for record, reason in undecodable:
            await self._dead_letter(record, reason, "undecodable")
        if failure is not None:
            raise failure
        return handled

    def _inbox_row(
        self,
        record: ConsumerRecord,
        event_id: str,
        event_type: str,
        status: str,
        error: str | None = None,
    ) -> dict[str, Any]:
        return {
            "consumer": self.name,
            "event_id": event_id,
            "event_type": event_type,
            "status": status,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "error": error,
            "processed_at": utcnow(),
        }

    async def _should_dead_letter(self, record: ConsumerRecord, error: BaseException) -> bool:
        key = (record.topic, record.partition, record.offset)
        tries = self._tries.get(key, 0) + 1
        self._tries[key] = tries
        if tries >= self._settings.consumer_max_tries:
            self._tries.pop(key, None)
            return True
        delay = min(
            self._settings.consumer_backoff_ms * 2 ** (tries - 1),
            self._settings.consumer_backoff_max_ms,
        )
        await asyncio.sleep(delay / 1000)
        return False

    async def _dead_letter(self, record: ConsumerRecord, reason: str, kind: str) -> None:
        """Write the record to the dead-letter topic via the outbox, and mark it in the inbox."""
        headers = list(record.headers or ())
        event_id = header(headers, "ce_id") or fallback_event_id(record)
        event_type = header(headers, "ce_type") or "unknown"
        dlq_headers = [
            *headers,
            ("x-dlq-reason", reason[:2000].encode()),
            ("x-dlq-kind", kind.encode()),
            ("x-dlq-consumer", self.name.encode()),
            ("x-dlq-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        row = record_row(
            Record(
                key=record.key or event_id.encode(), value=record.value or b"", headers=dlq_headers
            ),
            event_id=f"dlq:{self.name}:{event_id}",
            event_type=event_type,
            topic=DEAD_LETTER_TOPIC,
        )
        async with self._sessions() as session, session.begin():
            seen = await session.execute(
                select(self._inbox.c.status).where(
                    self._inbox.c.consumer == self.name, self._inbox.c.event_id == event_id
                )
            )
            if seen.first() is not None:
                return
            await session.execute(self._outbox.insert().values(row))
            await session.execute(
                self._inbox.insert().values(
                    self._inbox_row(record, event_id, event_type, "dead_lettered", reason[:2000])
                )
            )
        self._metrics.events_dead_lettered.labels(event_type).inc()
        log.error(
            "dead-lettered %s from %s: %s",
            event_id,
            record.topic,
            reason,
            extra={"event_id": event_id},
        )
        if self._on_commit is not None:
            self._on_commit()


def _count(metric: Any, counts: Mapping[str, int]) -> None:
    """Add ``counts`` to a counter labelled by event type: one ``labels`` a type, not an
    event (a child's look-up, ~4 µs, cost more than the rest of passing an event over)."""
    for event_type, n in counts.items():
        metric.labels(event_type).inc(n)


def fallback_event_id(record: ConsumerRecord) -> str:
    """The id a record without a ``ce_id`` header is dead-lettered and remembered under.

    Its place (topic, partition, offset) and a digest of its bytes: a redelivery of the same
    record gets the same id and is not dead-lettered twice, but a different record at the same
    place — offsets start again at 0 after a broker is wiped or replaced — gets an id of its own,
    where the place alone would take it for the first one and skip it unrecorded. A digest, not
    the place spelled out, so that ``dlq:<consumer>:<id>`` fits the outbox's 64 characters.
    """
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        record.topic.encode(),
        str(record.partition).encode(),
        str(record.offset).encode(),
        record.key or b"",
        record.value or b"",
        *(name.encode() + b"=" + (value or b"") for name, value in record.headers or ()),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return f"raw:{digest.hexdigest()}"
