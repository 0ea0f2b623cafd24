"""Human-readable ticket ids: ``YYYYMMDD`` + a per-day sequence, e.g. ``20261122-0000417``.

Numbers are reserved from the database in blocks so a request almost never waits on it; several
processes can share one database because each reserves its own blocks. A restart leaves a gap
in the sequence, never a repeat. Blocks are kept per day (the last few days in use), so a batch
file of last month's appeals does not throw away today's block.

Reservations grow with demand: one that comes within ``BUSY_SECONDS`` of the day's last one
takes twice as many blocks as that one did, up to ``max_blocks``; a quiet spell starts again
at one block. 1,000-row files took a reservation each (a transaction of two statements, ~2 %
of a worker's CPU a file); under a steady stream of them a worker now reserves once every 32
files. The gap a restart can leave grows with it: at most the last reservation's unused
numbers (32,000 by default, of a day's ten million).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.canonical import CITY_TZ
from services.intake.models import IdBlock

BUSY_SECONDS = 1.0
"""A reservation this soon after the day's last one reserves twice its blocks."""


class TicketIdAllocator:
    """Hands out ticket ids from blocks reserved in ``id_blocks``."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        block_size: int = 1000,
        max_blocks: int = 32,
        days_kept: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._block_size = block_size
        self._max_blocks = max_blocks
        self._days_kept = days_kept
        self._clock = clock
        # day -> (blocks its last reservation was sized for, when it was made)
        self._grown: dict[str, tuple[int, float]] = {}
        # day -> its reserved ranges [next, end), oldest first; most recently used day last
        self._blocks: dict[str, list[list[int]]] = {}
        self._lock = asyncio.Lock()
        self._last_at: datetime | None = None
        self._last_day = ""

    def _day(self, at: datetime) -> str:
        if at is not self._last_at:  # a group's rows mostly share one arrival time
            self._last_at, self._last_day = at, at.astimezone(CITY_TZ).strftime("%Y%m%d")
        return self._last_day

    def _free(self, day: str) -> int:
        return sum(end - nxt for nxt, end in self._blocks.get(day, ()))

    async def next_id(self, at: datetime) -> str:
        """The next ticket id for the city-local day of ``at``."""
        (ticket_id,) = await self.take([at])
        return ticket_id

    async def take(self, ats: Sequence[datetime]) -> list[str]:
        """The next ids for a whole group, in order. A day short of numbers reserves what the
        group needs (at least a block) in one round trip, however many tickets it has."""
        days = [self._day(at) for at in ats]
        wanted = Counter(days)
        # Another group may take numbers while this one waits for its reservation: check again,
        # and hand out only once every day has enough, with no wait in between.
        while short := [day for day, n in wanted.items() if self._free(day) < n]:
            async with self._lock:
                for day in short:
                    missing = wanted[day] - self._free(day)
                    if missing > 0:
                        await self._extend(day, missing)
        out = []
        for day in days:
            ranges = self._blocks[day]
            while ranges[0][0] >= ranges[0][1]:
                ranges.pop(0)
            value = ranges[0][0]
            ranges[0][0] += 1
            out.append(f"{day}-{value:07d}")
        for day in dict.fromkeys(days):
            self._blocks[day] = self._blocks.pop(day)  # keep the most recently used day last
        while len(self._blocks) > self._days_kept:
            del self._blocks[next(iter(self._blocks))]
        return out

    async def _extend(self, day: str, missing: int) -> None:
        """Reserve at least ``missing`` more numbers of ``day`` (whole blocks; more while the
        day's reservations come one soon after another)."""
        now = self._clock()
        grown, last = self._grown.get(day, (0, float("-inf")))
        grow = min(grown * 2, self._max_blocks) if now - last < BUSY_SECONDS else 1
        self._grown[day] = (grow, now)
        if len(self._grown) > self._days_kept:
            del self._grown[next(iter(self._grown))]
        size = max(-(-missing // self._block_size), grow) * self._block_size
        start, end = await self._reserve(day, size)
        ranges = self._blocks.setdefault(day, [])
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = end  # nobody reserved in between: one range
        else:
            ranges.append([start, end])

    async def _reserve(self, day: str, size: int) -> tuple[int, int]:
        table = IdBlock.__table__  # type: ignore[attr-defined]
        for _ in range(5):
            try:
                reserved = await self._try_reserve(table, day, size)
            except IntegrityError:
                continue  # another process created the day's row first
            if reserved is not None:
                return reserved
        raise RuntimeError(f"could not reserve a ticket id block for {day}")

    async def _try_reserve(self, table: Any, day: str, size: int) -> tuple[int, int] | None:
        async with self._engine.begin() as conn:
            current = (
                await conn.execute(select(table.c.next_value).where(table.c.day == day))
            ).scalar_one_or_none()
            if current is None:
                await conn.execute(table.insert().values(day=day, next_value=1 + size))
                return 1, 1 + size
            result = await conn.execute(
                update(table)
                .where(table.c.day == day, table.c.next_value == current)
                .values(next_value=current + size)
            )
            return (current, current + size) if result.rowcount == 1 else None
