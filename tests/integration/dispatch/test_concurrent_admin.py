"""Two operators creating the same department at the same moment: one is created, the other is
told it exists (409) — the same answer as when it had already been there, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from services.dispatch.organisation import admin
from services.dispatch.schemas import DepartmentCreate
from shared.errors import Conflict
from tests.integration.dispatch.support import DispatchEnv
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


async def test_two_creates_of_one_code_at_once_give_one_department_and_one_conflict(
    env: DispatchEnv,
) -> None:
    data = DepartmentCreate.model_validate(
        {
            "code": "CITY-RACE",
            "name_zh": "枫桥市竞态办",
            "name_en": "Fengqiao Race Office",
            "tier": "city",
            "jurisdiction": "339900",
            "responsibilities": ["0101"],
        }
    )

    checking = asyncio.Event()

    def on_execute(state: Any) -> None:
        """The second create's first statement is its existence check."""
        checking.set()

    async def create(actor: str) -> None:
        async with env.runtime.sessions() as session:
            event.listen(session.sync_session, "do_orm_execute", on_execute)
            async with session.begin():
                await admin.create_department(session=session, ctx=env.ctx, data=data, actor=actor)

    async def second_is_checking() -> bool:
        return checking.is_set()

    async with env.runtime.sessions() as first:
        await first.begin()
        await admin.create_department(session=first, ctx=env.ctx, data=data, actor="operator:first")
        # The second starts before the first commits: its existence check cannot see the row
        # (PostgreSQL: its INSERT then waits on the first's key; SQLite: its BEGIN IMMEDIATE
        # waits for the first's write lock, and the check runs after the commit).
        second = asyncio.create_task(create("operator:second"))
        await wait_until(second_is_checking, what="the second create to start its check")
        assert not second.done()
        await first.commit()
    with pytest.raises(Conflict, match="'CITY-RACE' already exists"):
        await second
    response = await env.client.get("/departments/CITY-RACE/history")
    assert [h["actor"] for h in response.json()] == ["operator:first"]
