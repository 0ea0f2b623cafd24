"""A busy database: a SQLite write lock held by another process past the busy timeout is a 503
to retry, not a 500; readiness stays green while the database is busy but answering."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import text

from services.intake.models import TICKETS
from tests.integration.intake.support import IntakeEnv, running
from tests.support import Database, wait_until


async def test_a_held_write_lock_is_a_503_with_retry_after_and_the_retry_succeeds(
    broker: Any, tmp_path: Path
) -> None:
    database = Database("sqlite", str(tmp_path))
    async with running(database, broker.bootstrap, sqlite_busy_timeout_ms=100) as env:
        body = {
            "external_id": env.unique("busy"),
            "title": "小区路灯不亮",
            "content": "塔山社区3号楼门口路灯坏了三天，晚上很黑。",
            "category_code": "0102",
        }
        other = _other_process(tmp_path)
        try:
            await _hold_write_lock(other)  # another process writing, for longer than 100 ms
            refused = await env.client.post("/tickets", json=body)
        finally:
            _let_go(other)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "locked" in refused.json()["detail"]
        assert await env.count(TICKETS, TICKETS.c.external_id == body["external_id"]) == 0

        retried = await env.client.post("/tickets", json=body)
        assert retried.status_code == 201, retried.text


async def test_readiness_holds_while_another_process_holds_the_write_lock(
    broker: Any, tmp_path: Path
) -> None:
    database = Database("sqlite", str(tmp_path))
    async with running(database, broker.bootstrap) as env:
        await wait_until(_ready(env), what="intake to be ready")
        other = _other_process(tmp_path)
        try:
            await _hold_write_lock(other)  # another process writing (a catch-up, a batch)
            answer = await env.client.get("/readyz")
        finally:
            _let_go(other)
        assert answer.status_code == 200, answer.text
        assert answer.json()["checks"]["database"] == "ok"


async def test_readiness_holds_while_every_pooled_connection_is_busy_and_writes_commit(
    env: IntakeEnv,
) -> None:
    await wait_until(_ready(env), what="intake to be ready")
    committer = env.ctx.committer

    async def one_statement(conn: Any) -> None:
        await conn.execute(text("SELECT 1"))

    await committer.submit(work=one_statement)  # the committer holds its own connection
    engines = {id(e): e for e in (env.runtime.engine, env.runtime.reader)}.values()
    held = []
    stop = asyncio.Event()

    async def keep_writing() -> int:
        done = 0
        while not stop.is_set():
            await committer.submit(work=one_statement)
            done += 1
        return done

    try:
        for engine in engines:  # requests, look-ups and the consumer have them all
            pool: Any = engine.pool
            while pool.checkedout() < pool.size() + pool._max_overflow:
                held.append(await engine.connect())
        writer = asyncio.create_task(keep_writing())
        answer = await env.client.get("/readyz")
        stop.set()
        assert await writer > 0
    finally:
        stop.set()
        for conn in held:
            await conn.close()
    assert held
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"]["database"] == "ok"


def _other_process(tmp_path: Path) -> sqlite3.Connection:
    """A connection standing for another process. Its own ``BEGIN IMMEDIATE`` waits up to 30 s
    for the service's writers (a relay's mark, a consumer's batch) to let go of the lock: on a
    loaded machine one can hold it past sqlite3's default 5 s, and the test would then fail
    before holding anything."""
    return sqlite3.connect(
        tmp_path / "intake.db", isolation_level=None, timeout=30, check_same_thread=False
    )


async def _hold_write_lock(other: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE`` on ``other``, waiting in a thread: the service runs on this event
    loop, and a writer of its own holding the lock (a relay's mark, a consumer's batch) can only
    finish and let go while the loop runs. Waited for on the loop itself, the two waited for
    each other until the 30 s timeout, whenever such a writer held the lock at that moment."""
    await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")


def _let_go(other: sqlite3.Connection) -> None:
    """Roll back what ``other`` holds, if it got the lock, and close it (a failed ``BEGIN``
    keeps its own error, not a rollback's "no transaction is active")."""
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


def _ready(env: IntakeEnv) -> Any:
    async def ready() -> bool:
        return (await env.client.get("/readyz")).status_code == 200

    return ready
