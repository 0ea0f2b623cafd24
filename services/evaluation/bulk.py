"""Bulk writing for the rebuild: rows go out in the background, batch after batch, so the
database ingests while Python decodes and folds. On PostgreSQL a batch is one ``COPY`` (asyncpg's
``copy_records_to_table``; JSON values through the bind processor Core would use, so they are
stored identically); on SQLite one ``executemany`` insert in a transaction of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from sqlalchemy import JSON, Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Batch = tuple[Table, Sequence[str], list[tuple[Any, ...]]]


class Sink:
    """A background writer of row batches, in the order they were put."""

    def __init__(self, engine: AsyncEngine, *, depth: int = 8) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(depth)
        self._task: asyncio.Task[None] | None = None
        self._processors: dict[tuple[Table, tuple[str, ...]], list[Any]] = {}

    async def __aenter__(self) -> Sink:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        if kind is None:
            await self.drain()
            return
        # What is still queued is dropped; the batch being written is let finish. Cancelled
        # mid-write, its transaction would be left to a connection torn down behind the pool's
        # back: on SQLite the write lock stays held until that connection is collected, and
        # whatever writes next (the indexes built again after a failed rebuild) times out.
        while not self._queue.empty():
            self._queue.get_nowait()
        if not self._task.done():
            await self._queue.put(None)
        await asyncio.gather(self._task, return_exceptions=True)

    async def put(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Queue one batch (waiting while the queue is full); a failed writer raises here."""
        assert self._task is not None
        if self._task.done():
            self._task.result()
            raise RuntimeError("the bulk writer has stopped")
        putting = asyncio.ensure_future(self._queue.put((table, columns, rows)))
        await asyncio.wait({putting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not putting.done():
            putting.cancel()
            self._task.result()
            raise RuntimeError("the bulk writer has stopped")

    async def drain(self) -> None:
        """Wait until every queued batch is written (then the sink is closed)."""
        assert self._task is not None
        if not self._task.done():
            await self._queue.put(None)
        await self._task

    async def _run(self) -> None:
        async with self._engine.connect() as conn:
            while (batch := await self._queue.get()) is not None:
                await self._write(conn, *batch)

    async def _write(
        self, conn: AsyncConnection, table: Table, columns: Sequence[str], rows: list[Any]
    ) -> None:
        if conn.dialect.name != "postgresql":
            async with conn.begin():
                await conn.execute(
                    insert(table), [dict(zip(columns, r, strict=True)) for r in rows]
                )
            return
        processors = self._bind_processors(conn, table, tuple(columns))
        if processors:
            rows = [list(r) for r in rows]
            for r in rows:
                for i, process in processors:
                    if r[i] is not None:
                        r[i] = process(r[i])
        raw = await conn.get_raw_connection()
        # Outside any transaction: the COPY commits by itself, batch by batch.
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            table.name, records=rows, columns=list(columns)
        )

    def _bind_processors(
        self, conn: AsyncConnection, table: Table, columns: tuple[str, ...]
    ) -> list[tuple[int, Callable[[Any], Any]]]:
        """(position, processor) of the JSON columns: their values must be serialized. asyncpg
        takes the others as they are (aware datetimes and booleans, which is all the other
        processors would check or convert: converting a million values cost seconds)."""
        key = (table, columns)
        if key not in self._processors:
            dialect = conn.dialect
            found = (
                (i, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
                for i, name in enumerate(columns)
                if isinstance(table.c[name].type, JSON)
            )
            self._processors[key] = [(i, p) for i, p in found if p is not None]
        return self._processors[key]
