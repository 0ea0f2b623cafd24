"""The repeat look-ups keep their connection between groups: no pool checkout a group; a kept
connection that broke (the server ended it, or it was closed under the look-up) is replaced
and the next group still answers, with its repeat found; at the service's stop every kept
connection goes back to the pool."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.repeat_lookup import ShingleCache
from shared.groupcommit import in_sqlite_thread
from tests.integration.intake.support import IntakeEnv, running
from tests.integration.intake.support import ticket_body as ticket
from tests.support import Database


@pytest.fixture
async def env(module_database: Database, broker: Any) -> AsyncIterator[IntakeEnv]:
    """An intake of this test's own: the tests count its connections and stop it."""
    async with running(module_database, broker.bootstrap) as running_env:
        yield running_env


@contextmanager
def lookup_checkouts(env: IntakeEnv) -> Iterator[list[int]]:
    """Connections the repeat look-up takes from the readers' engine, as it takes them."""
    found: list[int] = []
    reader = env.app.state.runtime.reader
    connect = AsyncEngine.connect

    def counted(engine: AsyncEngine) -> Any:
        if engine is reader and sys._getframe(1).f_code.co_filename.endswith("repeat_lookup.py"):
            found.append(1)
        return connect(engine)

    with mock.patch.object(AsyncEngine, "connect", counted):
        yield found


async def post(env: IntakeEnv, **fields: Any) -> dict[str, Any]:
    response = await env.client.post("/tickets", json=ticket(env, **fields))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_look_ups_keep_one_connection_between_groups(env: IntakeEnv) -> None:
    phone = env.phone()
    with lookup_checkouts(env) as checkouts:
        first = await post(env, citizen_phone=phone, content=f"第一次反映{env.unique()}")
        later = [
            await post(env, citizen_phone=phone, content=f"又一次反映{env.unique()}")
            for _ in range(6)
        ]
    assert [t["repeat_of"] for t in later] == [first["ticket_id"]] * 6
    assert len(checkouts) == 1  # the first group's; six more groups on the same connection


async def _break_kept_connection(env: IntakeEnv, kind: str) -> None:
    """End the look-ups' kept connection behind their back."""
    ctx = env.app.state.runtime.context
    ((_, driver),) = ctx.loader.connections._idle
    if kind == "postgres":  # by the server, as a restart or an idle timeout would
        pid = driver.get_server_pid()
        async with env.app.state.runtime.engine.connect() as other:
            await other.execute(text(f"SELECT pg_terminate_backend({pid})"))
    else:  # its SQLite connection closed under it
        await in_sqlite_thread(driver, lambda sqlite: sqlite.close())


@pytest.mark.parametrize("noticed", [True, False], ids=["noticed", "unnoticed"])
async def test_a_broken_kept_connection_is_replaced_and_the_next_group_answers(
    env: IntakeEnv, module_database: Database, noticed: bool
) -> None:
    phone = env.phone()
    first = await post(env, citizen_phone=phone, content=f"第一次反映{env.unique()}")
    await _break_kept_connection(env, module_database.kind)
    if noticed:
        await asyncio.sleep(0.1)  # asyncpg sees the closed socket: replaced before use
    # The stored candidate's shingles not at hand: the look-up reads them too.
    env.app.state.runtime.context.loader.shingles = ShingleCache()
    with lookup_checkouts(env) as checkouts:
        again = await post(env, citizen_phone=phone, content=f"又一次反映{env.unique()}")
        once_more = await post(env, citizen_phone=phone, content=f"再一次反映{env.unique()}")
    assert again["repeat_of"] == first["ticket_id"] == once_more["repeat_of"]
    assert (again["repeat_count"], once_more["repeat_count"]) == (1, 2)
    assert len(checkouts) == 1  # the replacement, kept for the group after


async def test_the_kept_connections_go_back_to_the_pool_at_stop(
    module_database: Database, broker: Any
) -> None:
    counts = {"checkout": 0, "checkin": 0}

    def count(name: str) -> Any:
        def counted(*_: Any) -> None:
            counts[name] += 1

        return counted

    async with running(module_database, broker.bootstrap) as env:
        engine = env.app.state.runtime.reader.sync_engine
        for name in counts:
            event.listen(engine, name, count(name))
        phone = env.phone()
        await asyncio.gather(*(post(env, citizen_phone=phone) for _ in range(8)))
        assert env.app.state.runtime.context.loader.connections._idle  # kept while running
    assert counts["checkout"] > 0 and counts["checkin"] == counts["checkout"]


async def _plan_cache_modes(engine: AsyncEngine) -> set[str]:
    """``plan_cache_mode`` on every connection idle in the engine's pool (all checked out at
    once, so none is missed)."""
    async with contextlib.AsyncExitStack() as held:
        conns = [
            await held.enter_async_context(engine.connect())
            for _ in range(engine.pool.checkedin())  # type: ignore[attr-defined]
        ]
        return {str(await c.scalar(text("SHOW plan_cache_mode"))) for c in conns}


async def test_the_kept_connections_plan_once_and_go_back_planning_each_run(
    module_database: Database, broker: Any
) -> None:
    """PostgreSQL: the look-ups' and the group commit's kept connections plan their statements
    once (neither's plan depends on the values); given back to the pool, where any statement
    may run on them, they plan each run again as the service's sessions do."""
    if module_database.kind != "postgres":
        pytest.skip("plan_cache_mode is PostgreSQL's")
    async with running(module_database, broker.bootstrap) as env:
        runtime = env.app.state.runtime
        phone = env.phone()
        for _ in range(3):
            await post(env, citizen_phone=phone, content=f"反映{env.unique()}")
        ((_, lookup),) = runtime.context.loader.connections._idle
        lanes = [lane.driver for lane in runtime.committer._lanes if lane.driver is not None]
        assert lanes
        for driver in (lookup, *lanes):
            assert await driver.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        await runtime.context.loader.connections.close()
        await runtime.committer.stop()
        assert await _plan_cache_modes(runtime.engine) == {"force_custom_plan"}
