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


class _HeldCommitter:
    """Commits only when told: each enqueue's future is kept until ``release``."""

    def __init__(self) -> None:
        self.held: list[asyncio.Future[None]] = []

    def enqueue(self, **_: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held.append(future)
        return future

    def release(self, exc: Exception | None = None) -> None:
        for future in self.held:
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)
        self.held.clear()


class _CountingPipeline:
    """Records each group's size; waits for ``gate`` (when set) before it answers."""

    def __init__(self) -> None:
        self.groups: list[int] = []
        self.gate: asyncio.Event | None = None

    async def prepare_group(self, units: Sequence[Any], *, now: Any) -> list[list[Any]]:
        self.groups.append(len(units))
        if self.gate is not None:
            await self.gate.wait()
        return [[] for _ in units]


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def _held_groups(
    quiet: float | None = None,
) -> tuple[AppealGroups, _CountingPipeline, _HeldCommitter]:
    """Groups of fewer than 16 rows held, on a counting pipeline and a committer held till told."""
    pipeline, committer = _CountingPipeline(), _HeldCommitter()
    groups = AppealGroups(
        pipeline,  # type: ignore[arg-type]
        _Outbox(),  # type: ignore[arg-type]
        lambda: committer,
        wait_below=16,
        quiet=quiet,
    )
    return groups, pipeline, committer


async def test_a_small_group_waits_for_its_commit_and_the_next_takes_what_queued() -> None:
    groups, pipeline, committer = _held_groups()
    # While a small group is prepared (its look-up awaited), no second task takes new arrivals.
    pipeline.gate = asyncio.Event()
    first = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    arrived = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    assert pipeline.groups == [1]
    pipeline.gate.set()
    pipeline.gate = None
    await _settle()
    assert first.done() and not arrived.done()
    committer.release()
    await (await first).committed
    await _settle()
    assert pipeline.groups == [1, 1] and arrived.done()
    first, pipeline.groups = arrived, [1]  # its group (committing now) is the first from here
    # Queued while the first group commits: not prepared until it has, then all in one group.
    later = [asyncio.create_task(groups.submit([], actor=None)) for _ in range(5)]
    await _settle()
    assert pipeline.groups == [1] and not any(t.done() for t in later)
    committer.release()
    await (await first).committed
    await _settle()
    assert pipeline.groups == [1, 5] and all(t.done() for t in later)
    # A failed commit fails its units (their callers see it) and the next group goes on.
    committer.release(RuntimeError("commit failed"))
    for task in later:
        with pytest.raises(RuntimeError, match="commit failed"):
            await (await task).committed
    last = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    assert pipeline.groups == [1, 5, 1]
    committer.release()
    await (await last).committed
    # A large group (16 rows and more) keeps the overlap: the next is prepared while it commits.
    large = asyncio.create_task(groups.submit([None] * 16, actor=None))
    await _settle()
    small = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    assert pipeline.groups == [1, 5, 1, 1, 1] and large.done() and small.done()
    committer.release()
    await (await large).committed
    await (await small).committed


async def test_a_small_groups_hold_ends_once_the_queue_is_quiet() -> None:
    groups, pipeline, committer = _held_groups(quiet=0.1)
    first = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    assert pipeline.groups == [1]
    # Posts that keep arriving while the group commits keep the hold: one group, not many.
    later = []
    for _ in range(8):
        later.append(asyncio.create_task(groups.submit([], actor=None)))
        await asyncio.sleep(0.03)
    assert pipeline.groups == [1] and not any(t.done() for t in later)
    # Once none has joined them for ``quiet``, the next group is prepared during the commit.
    for _ in range(200):
        if pipeline.groups != [1]:
            break
        await asyncio.sleep(0.01)
    assert pipeline.groups == [1, 8] and not (await first).committed.done()
    await _settle()
    assert all(t.done() for t in later)
    committer.release()
    await (await first).committed
    for task in later:
        await (await task).committed


async def test_posts_quiet_since_they_queued_start_the_next_group_at_once() -> None:
    """Quiet counts from the last arrival: posts that queued while the group was prepared and
    none after them for ``quiet`` are taken as soon as the group is queued for commit, not
    ``quiet`` after its hold began; one that has just arrived still waits out ``quiet``."""
    groups, pipeline, committer = _held_groups(quiet=0.2)
    pipeline.gate = asyncio.Event()
    first = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    waiting = [asyncio.create_task(groups.submit([], actor=None)) for _ in range(3)]
    await asyncio.sleep(0.25)  # quiet since they queued, while the first group is prepared
    pipeline.gate.set()
    pipeline.gate = None
    await _settle()
    assert pipeline.groups == [1, 3] and not (await first).committed.done()
    # The second group is committing; a post arrives: it is not taken before ``quiet``.
    second = await waiting[0]
    late = asyncio.create_task(groups.submit([], actor=None))
    await asyncio.sleep(0.1)
    assert pipeline.groups == [1, 3] and not second.committed.done()
    for _ in range(50):
        if len(pipeline.groups) > 2:
            break
        await asyncio.sleep(0.01)
    assert pipeline.groups == [1, 3, 1]
    committer.release()
    for task in [first, *waiting, late]:
        await (await task).committed


async def test_posts_sent_again_just_after_a_commit_join_one_group() -> None:
    """After its commit a small group's hold lasts ``quiet`` more at most: the callers it just
    answered send again, and their posts make one group, not a group of the first alone and
    one of the rest. Once that has passed with nothing queued, a lone post is taken at once."""
    groups, pipeline, committer = _held_groups(quiet=0.2)
    first = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    committer.release()
    await (await first).committed
    again = []
    for _ in range(3):
        again.append(asyncio.create_task(groups.submit([], actor=None)))
        await asyncio.sleep(0.02)
    for _ in range(50):
        if all(t.done() for t in again):
            break
        await asyncio.sleep(0.01)
    assert pipeline.groups == [1, 3]
    committer.release()
    for task in again:
        await (await task).committed
    await asyncio.sleep(0.3)  # quiet since the commit: the task is gone
    lone = asyncio.create_task(groups.submit([], actor=None))
    await _settle()
    assert pipeline.groups == [1, 3, 1] and lone.done()
    committer.release()
    await (await lone).committed
