"""Human-readable ticket ids: ``YYYYMMDD`` + a per-day sequence, e.g. ``20261122-0000417``.

Numbers are reserved from the database in blocks so a request almost never waits on it; several
processes can share one database because each reserves its own blocks. A restart leaves a gap
in the sequence, never a repeat. Blocks are kept per day (the last few days in use), so a batch
file of last month's appeals does not throw away today's block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.canonical import CITY_TZ
from services.intake.models import IdBlock


class TicketIdAllocator:
    """Hands out ticket ids from blocks reserved in ``id_blocks``."""

    def __init__(self, engine: AsyncEngine, *, block_size: int = 1000, days_kept: int = 32) -> None:
        self._engine = engine
        self._block_size = block_size
        self._days_kept = days_kept
        self._blocks: dict[str, list[int]] = {}  # day -> [next, end), most recently used last
        self._lock = asyncio.Lock()
        self._last_at: datetime | None = None
        self._last_day = ""

    async def next_id(self, at: datetime) -> str:
        """The next ticket id for the city-local day of ``at``."""
        if at is self._last_at:  # a file's rows mostly share one arrival time
            day = self._last_day
        else:
            day = at.astimezone(CITY_TZ).strftime("%Y%m%d")
            self._last_at, self._last_day = at, day
        block = self._blocks.get(day)
        if block is None or block[0] >= block[1]:
            async with self._lock:
                block = self._blocks.get(day)
                if block is None or block[0] >= block[1]:
                    block = list(await self._reserve(day))
                    self._blocks[day] = block
        self._blocks[day] = self._blocks.pop(day)  # keep the most recently used day last
        while len(self._blocks) > self._days_kept:
            del self._blocks[next(iter(self._blocks))]
        value = block[0]
        block[0] += 1
        return f"{day}-{value:07d}"

    async def take(self, ats: Sequence[datetime]) -> list[str]:
        """The next ids for a whole group, in order: one coroutine, not one per ticket."""
        return [await self.next_id(at) for at in ats]

    async def _reserve(self, day: str) -> tuple[int, int]:
        table = IdBlock.__table__  # type: ignore[attr-defined]
        for _ in range(5):
            try:
                reserved = await self._try_reserve(table, day)
            except IntegrityError:
                continue  # another process created the day's row first
            if reserved is not None:
                return reserved
        raise RuntimeError(f"could not reserve a ticket id block for {day}")

    async def _try_reserve(self, table: Any, day: str) -> tuple[int, int] | None:
        async with self._engine.begin() as conn:
            current = (
                await conn.execute(select(table.c.next_value).where(table.c.day == day))
            ).scalar_one_or_none()
            if current is None:
                await conn.execute(table.insert().values(day=day, next_value=1 + self._block_size))
                return 1, 1 + self._block_size
            result = await conn.execute(
                update(table)
                .where(table.c.day == day, table.c.next_value == current)
                .values(next_value=current + self._block_size)
            )
            return (current, current + self._block_size) if result.rowcount == 1 else None
