"""The group is the unit of work: appeals that queue while one group is being prepared are
prepared together, and handed to the group committer together.

A request puts its unit (one appeal, or a batch file's good rows) in the queue and waits. A
task takes everything queued, runs the pipeline once for the whole group (PII,
classification in one matrix product, grids, numbering, one repeat look-up, rows and events),
builds each unit's outbox and audit rows, and queues every unit to the committer in one go, so
they share its next transaction. A request that finds no task running starts one at once, so
an idle service adds no wait. Each request is answered with its tickets and the future of its
commit, and answers its client only once that is done.

Up to ``max_inflight`` tasks (two), each taking the next group as soon as its own is queued for
commit: preparing a group and committing the previous one overlap, and while one task waits for
its repeat look-up the other prepares what queued meanwhile. Except for a small group (fewer
than ``wait_below`` rows: single posts, small files): no other task starts while it is prepared,
and its task waits for its commit before it takes the next group, so everything that queued
while the group was prepared *and* committed goes into the next one. A group's fixed cost (its
repeat look-up, its stages' set-up, its transaction and the commit's WAL flush) is then shared
by about all of a worker's waiting callers, where overlapping preparation and commit split them
over two or three groups. A large group (a 1,000-row file) has its fixed cost shared already and
keeps the overlap.

The hold ends before the commit when the queue has gone quiet (``quiet``): posts are waiting and
none has joined them for that long. Callers that wait for their answer before they send again
(a client's connections, a channel's gateway) cannot add to the queue while their posts are in
the committing group, so once the rest have queued, waiting for the commit grows the next group
no further: it only puts the commit's round trip and WAL flush into every post's latency. The
next group is prepared while the one before commits (on the committer's other connection), as
large as the hold would have made it; while posts keep arriving, the hold stays. Once the
group has committed the hold lasts ``quiet`` more at most: the callers it answered send again
at once, and their posts join one group rather than the first of them starting one alone.

A unit that fails to prepare fails alone (its caller gets the exception); the committer fails
a unit alone in the same way. A request whose client went away before its group was taken is
left out of the group.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from services.intake.adapters import AttachmentBlob
from services.intake.models import BLOBS, TICKETS
from services.intake.pipeline import Pipeline, Prepared, Unit
from shared.auth import Principal
from shared.events.base import Event, utcnow
from shared.groupcommit import Columns, GroupCommitter, Inserts, Work
from shared.outbox import (
    RECORDS,
    Outbox,
    audit_columns,
    audit_row,
    bundle_row,
    event_ids,
    record_columns,
    record_row,
)


@dataclass(frozen=True, slots=True)
class Staged:
    """A unit prepared and queued for commit: its tickets, and the commit to wait for."""

    prepared: list[Prepared]
    committed: asyncio.Future[Any]


@dataclass(slots=True)
class _Queued:
    items: Unit
    blobs: Sequence[AttachmentBlob]
    actor: Principal | None
    future: asyncio.Future[Staged] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class AppealGroups:
    """The queue in front of the pipeline and the task that drains it a group at a time."""

    def __init__(
        self,
        pipeline: Pipeline,
        outbox: Outbox,
        committer: Any,
        *,
        max_rows: int = 4096,
        max_inflight: int = 2,
        wait_below: int = 0,
        quiet: float | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._outbox = outbox
        self._committer = committer  # () -> GroupCommitter: it exists once the runtime runs
        self._max_rows = max_rows
        self._max_inflight = max_inflight
        self._wait_below = wait_below
        self._quiet = quiet  # seconds of no new arrival that end a small group's hold; None: never
        self._holding = 0  # tasks with a small group in preparation or commit: start no other
        self._arrived = 0.0  # when the last unit was queued (``time.monotonic``)
        self._queue: deque[_Queued] = deque()
        self._drains: set[asyncio.Task[None]] = set()
        self.groups = 0
        self.units = 0

    async def submit(
        self,
        items: Unit,
        *,
        actor: Principal | None,
        blobs: Sequence[AttachmentBlob] = (),
    ) -> Staged:
        """Queue one unit; return once it is prepared and queued for commit."""
        queued = _Queued(items, blobs, actor)
        self._queue.append(queued)
        self._arrived = time.monotonic()
        if not self._holding and len(self._drains) < self._max_inflight:
            # A context of its own: the task must not carry the first caller's principal.
            drain = asyncio.create_task(
                self._run(), name="appeal-groups", context=contextvars.Context()
            )
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)  # one cancelled before it ran
        return await queued.future

    def _take(self) -> list[_Queued]:
        group: list[_Queued] = []
        rows = 0
        while self._queue and (not group or rows + len(self._queue[0].items) <= self._max_rows):
            queued = self._queue.popleft()
            if queued.future.done():  # its caller is gone
                continue
            group.append(queued)
            rows += len(queued.items)
        return group

    async def _run(self) -> None:
        try:
            await self._drain()
        finally:
            # At once, with no await after its last look at the queue: a task done but not yet
            # discarded (its done-callbacks run a loop turn later) would count as running, and
            # a unit queued in that turn would wait for some later request to start one.
            self._drains.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _drain(self) -> None:
        while self._queue:
            group = self._take()
            if not group:
                continue
            # A small group holds the queue from its preparation to its commit.
            small = sum(len(q.items) for q in group) < self._wait_below
            self._holding += small
            try:
                committed = await self._prepare(group)
                if small and committed:
                    await self._hold(committed)
            except Exception as exc:  # not any one unit's: the whole group fails with it
                _fail(group, exc)
            except BaseException:
                _fail([*group, *self._queue], RuntimeError("service is shutting down"))
                self._queue.clear()
                raise
            finally:
                self._holding -= small

    async def _hold(self, committed: list[asyncio.Future[Any]]) -> None:
        """Wait until posts are queued and none has joined them for ``quiet`` seconds, or, once
        the group has committed, at most ``quiet`` more: no more are coming before the commit,
        so the next group starts.

        Quiet is counted from the last post's arrival, not from the hold's start: posts that
        queued while the group was prepared and have been quiet since start the next group at
        once. After the commit the hold lasts ``quiet`` longer at most (less once what queued
        is quiet): the group's callers, answered now, send their next posts, and those join
        the next group instead of its first arriving alone in a group of one. The queue is
        looked at by a timer callback, not by waking this task: a look costs no task switch and
        no callbacks on the group's futures, however long the commit takes."""
        if self._quiet is None:
            await asyncio.wait(committed)
            return
        loop, quiet = asyncio.get_running_loop(), self._quiet
        release: asyncio.Future[None] = loop.create_future()
        remaining = len(committed)
        timer: asyncio.TimerHandle | None = None
        done_at: float | None = None

        def one_committed(_: asyncio.Future[Any]) -> None:
            nonlocal remaining, done_at
            remaining -= 1
            if not remaining:
                done_at = time.monotonic()
                look()

        def look() -> None:
            nonlocal timer
            if release.done():
                return
            if timer is not None:
                timer.cancel()
            now = time.monotonic()
            due = self._arrived + quiet if self._queue else None
            if done_at is not None:
                due = done_at + quiet if due is None else min(due, done_at + quiet)
            if due is not None and due <= now:
                release.set_result(None)
                return
            timer = loop.call_later(quiet if due is None else max(due - now, quiet / 4), look)

        for future in committed:
            future.add_done_callback(one_committed)
        look()
        try:
            await release
        finally:
            if timer is not None:
                timer.cancel()

    async def _prepare(self, group: list[_Queued]) -> list[asyncio.Future[Any]]:
        """Prepare the group and queue its units for commit; the commits' futures."""
        now = utcnow()
        outcomes = await self._pipeline.prepare_group([q.items for q in group], now=now)
        committer: GroupCommitter = self._committer()
        self.groups += 1
        self.units += len(group)
        pending: list[asyncio.Future[Any]] = []
        for queued, outcome in zip(group, outcomes, strict=True):
            if queued.future.done():
                continue
            if isinstance(outcome, Exception):
                queued.future.set_exception(outcome)
                continue
            try:
                inserts = self._inserts(outcome, queued.actor, now)
                work = blob_writer(queued.blobs, now) if queued.blobs else None
                committed = committer.enqueue(inserts=inserts, work=work)
            except Exception as exc:
                queued.future.set_exception(exc)
            else:
                queued.future.set_result(Staged(outcome, committed))
                pending.append(committed)
        return pending

    def _inserts(self, prepared: list[Prepared], actor: Principal | None, now: datetime) -> Inserts:
        """The unit's ticket rows, outbox rows and audit rows (its own caller as the actor); a
        unit whose rows came a column at a time (a batch file) hands all three over so."""
        outbox, audit = self._outbox.table, self._outbox.audit
        stored = prepared[0].stored if prepared else None
        if isinstance(stored, tuple):
            events = [p.event for p in prepared]
            ids = event_ids(events)  # the outbox's and the audit's, made once
            # The events in one outbox row (``bundle_row``), or a row each if they cannot be.
            bundle = bundle_row(events, now=now, ids=ids) if RECORDS in outbox.c else None
            columns: list[tuple[Table, dict[str, Any]] | Columns] = [
                stored[0],
                (outbox, bundle)
                if bundle is not None
                else record_columns(outbox, events, now=now, ids=ids),
            ]
            if audit is not None:
                columns.append(audit_columns(audit, events, actor, now=now, ids=ids))
            return columns
        inserts: list[tuple[Table, dict[str, Any]] | Columns] = [(TICKETS, p.row) for p in prepared]
        inserts += [
            (
                outbox,
                record_row(
                    p.event.record,
                    event_id=str(p.event.event_id),
                    event_type=p.event.event_type,
                    topic=p.event.topic,
                ),
            )
            for p in prepared
        ]
        if audit is not None:
            # An audit row reads an event's id, type, ticket id and time, which ``Encoded``
            # carries as the event does (the model itself is not built on this path).
            inserts += [(audit, audit_row(cast(Event, p.event), actor, now=now)) for p in prepared]
        return inserts


def _fail(group: Sequence[_Queued], exc: Exception) -> None:
    for queued in group:
        if not queued.future.done():
            queued.future.set_exception(exc)


def blob_writer(blobs: Sequence[AttachmentBlob], now: datetime) -> Work:
    """A unit of work that stores attachment bytes once per SHA-256 (a re-sent file is free)."""
    rows = list(
        {
            b.meta.sha256: {
                "sha256": b.meta.sha256,
                "content_type": b.meta.content_type,
                "size": b.meta.size,
                "data": b.data,
                "created_at": now,
            }
            for b in blobs
        }.values()
    )

    async def store_blobs(conn: Any) -> None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(BLOBS).on_conflict_do_nothing(index_elements=["sha256"])
        await conn.execute(statement, rows)

    return store_blobs
