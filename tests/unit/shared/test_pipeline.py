"""The inbox's ``Pipeline``: a fetch's carry reaches only the fetch staged while it is in
flight, and is gone once it is settled — committed or not — or the pipeline is closed."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.inbox import Batch, Pipeline


class _Session:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def begin(self) -> None:
        self.log.append("begin")

    async def commit(self) -> None:
        self.log.append("commit")

    async def close(self) -> None:
        self.log.append("close")


class _Stage:
    def __init__(self, name: str, fail: bool, gate: asyncio.Event) -> None:
        self.carry = name
        self.fail = fail
        self.gate = gate

    async def write(self, session: Any) -> list[str]:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError(f"{self.carry} not committed")
        return [self.carry]


async def test_the_carry_goes_only_to_the_fetch_staged_while_its_own_is_in_flight() -> None:
    log: list[str] = []
    given: list[Any] = []
    gate = asyncio.Event()

    async def stage(events: list[Any], *, session: Any, carry: Any) -> _Stage:
        given.append(carry)
        return _Stage(events[0], fail=events[0] == "B", gate=gate)

    async def many(events: list[Any], *, session: Any) -> None:
        raise AssertionError("staged, never called whole")

    sessions = cast(async_sessionmaker[AsyncSession], lambda: _Session(log))
    handler = Batch(many, deduplicates=True, stage=stage)
    pipe = Pipeline(sessions)

    pipe.launch(await pipe.stage(handler, ["A"]))  # nothing in flight: no carry
    b = await pipe.stage(handler, ["B"])  # A in flight: A's carry
    gate.set()
    assert await pipe.settle() == ["A"]
    pipe.launch(b)
    c = await pipe.stage(handler, ["C"])  # B in flight: B's carry
    with pytest.raises(RuntimeError, match="B not committed"):
        await pipe.settle()
    await pipe.discard(c)  # staged on B's carry: thrown away
    d = await pipe.stage(handler, ["D"])  # B failed, nothing in flight: no carry
    gate.clear()
    pipe.launch(d)
    e = await pipe.stage(handler, ["E"])  # D in flight
    await pipe.close()  # stopping: D cancelled, its carry gone
    assert not pipe.busy
    await pipe.discard(e)
    f = await pipe.stage(handler, ["F"])
    await pipe.discard(f)
    assert given == [None, "A", "B", None, "D", None]
    assert log.count("begin") == log.count("close") == 6
    assert log.count("commit") == 1  # A only
