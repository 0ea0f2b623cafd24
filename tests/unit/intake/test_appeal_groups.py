"""The queue in front of the pipeline: a unit queued just as the last group's task ends is still
taken (by a new task), never left waiting for a later request to start one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from services.intake.groups import AppealGroups


class _Outbox:
    table = audit = None


class _Committer:
    def enqueue(self, **_: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Pipeline:
    """Prepares every unit as no tickets; calls ``during`` while preparing (no await between)."""

    def __init__(self) -> None:
        self.during: Any = None

    async def prepare_group(self, units: Sequence[Any], *, now: Any) -> list[list[Any]]:
        if self.during is not None:
            self.during()
        return [[] for _ in units]


@pytest.mark.parametrize("max_inflight", [1, 2])
async def test_a_unit_queued_as_the_last_task_ends_is_taken(max_inflight: int) -> None:
    pipeline = _Pipeline()
    groups = AppealGroups(
        pipeline,  # type: ignore[arg-type]
        _Outbox(),  # type: ignore[arg-type]
        _Committer,
        max_inflight=max_inflight,
    )
    gate = asyncio.Event()

    async def late() -> Any:
        await gate.wait()
        return await groups.submit([], actor=None)

    # Woken from inside the last group's preparation: it queues its unit after that task's last
    # look at the queue and before the task is done (its done-callbacks not yet run).
    waiting = asyncio.create_task(late())
    await asyncio.sleep(0)
    pipeline.during = gate.set
    others = [groups.submit([], actor=None) for _ in range(max_inflight)]
    await asyncio.gather(*others)
    pipeline.during = None
    staged = await asyncio.wait_for(waiting, 2)
    assert staged.prepared == []
