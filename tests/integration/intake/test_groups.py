"""The group is the unit of work: concurrent posts and batch files are prepared together and
stored in shared transactions, and each answer still says what was decided for its own appeal,
after its own ticket and event were committed, with its own caller on the audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.intake import classifier
from services.intake.ids import TicketIdAllocator
from services.intake.models import TICKETS, metadata, outbox_table
from tests.integration.intake.support import IntakeEnv, running
from tests.integration.intake.support import ticket_body as ticket
from tests.support import Database, as_role

AUDIT = metadata.tables["audit_trail"]

TEXTS = [
    ("小区门口垃圾堆积", "垃圾桶满了好几天没人清运，气味很大。"),
    ("楼上装修噪音扰民", "晚上十一点还在电钻施工，影响休息。"),
    ("路面塌陷", "人民路中段路面出现一个大坑，车辆经过很危险。"),
    ("咨询社保缴费", "想了解灵活就业人员社保怎么缴纳？"),
    ("自来水停水", "我们小区从早上开始停水，没有接到任何通知。"),
]


@pytest.fixture(scope="module")
async def env(module_database: Database, broker: Any) -> AsyncIterator[IntakeEnv]:
    """Intake verifying tokens, so each concurrent request has a caller of its own."""
    async with running(module_database, broker.bootstrap, auth_mode="token") as running_env:
        yield running_env


async def test_concurrent_posts_share_groups_and_each_answer_is_its_own(env: IntakeEnv) -> None:
    groups = env.ctx.groups
    citizen = env.phone()
    first = await env.client.post(
        "/tickets", json=ticket(env, citizen_phone=citizen), headers=as_role("hotline")
    )
    assert first.status_code == 201, first.text
    first_id = first.json()["ticket_id"]
    bodies: list[dict[str, Any]] = []
    for n in range(30):
        if n % 3 == 0:  # the same citizen again: a repeat of the first ticket
            bodies.append(ticket(env, citizen_phone=citizen))
        elif n % 3 == 1:  # no category: the classifier's, computed for the group at once
            title, content = TEXTS[n % len(TEXTS)]
            bodies.append(ticket(env, title=title, content=content, category_code=None))
        else:
            bodies.append(ticket(env))
    groups_before, units_before = groups.groups, groups.units
    answers = await asyncio.gather(
        *(
            env.client.post("/tickets", json=body, headers=as_role("hotline", subject=f"op-{n}"))
            for n, body in enumerate(bodies)
        )
    )
    assert [a.status_code for a in answers] == [201] * 30, [a.text for a in answers]
    assert groups.units - units_before == 30
    assert groups.groups - groups_before < 30  # requests that queued together were one group
    for n, (body, answer) in enumerate(zip(bodies, answers, strict=True)):
        accepted = answer.json()
        row = await env.ticket(accepted["ticket_id"])
        assert row is not None and row.external_id == body["external_id"]
        # The answer says what was stored.
        assert accepted["category_code"] == row.category_code
        assert accepted["repeat_of"] == row.repeat_of
        assert accepted["repeat_count"] == row.repeat_count
        if n % 3 == 0:
            assert accepted["repeat_of"] == first_id, accepted
        elif n % 3 == 1:
            expected = classifier.classify(body["title"], body["content"]).code
            assert (accepted["category_code"], row.category_source) == (expected, "classifier")
        else:
            assert accepted["category_code"] == "0102"
        async with env.runtime.engine.connect() as conn:
            events = (
                await conn.execute(
                    select(outbox_table.c.event_id).where(outbox_table.c.key == row.ticket_id)
                )
            ).all()
            actors = (
                await conn.execute(
                    select(AUDIT.c.actor_role, AUDIT.c.actor_subject).where(
                        AUDIT.c.ticket_id == row.ticket_id
                    )
                )
            ).all()
        assert len(events) == 1
        # Prepared by the group's task, yet the audit row names this request's own caller.
        assert [tuple(a) for a in actors] == [("hotline", f"op-{n}")]


async def test_a_batch_file_and_single_posts_in_one_group_each_get_their_answer(
    env: IntakeEnv,
) -> None:
    lines = ["外部编号,诉求人,联系电话,标题,内容,地址,分类编码,紧急程度"]
    for n in range(40):
        title, content = TEXTS[n % len(TEXTS)]
        row = [env.unique("row"), "张先生", env.phone(), title, content, env.address(), "", "一般"]
        lines.append(",".join(row))
    csv = "\n".join(lines).encode()
    duplicate = ticket(env)
    stored = await env.client.post("/tickets", json=duplicate, headers=as_role("hotline"))
    assert stored.status_code == 201, stored.text
    singles = [ticket(env) for _ in range(10)]
    answers = await asyncio.gather(
        env.client.post(
            "/channels/grid-patrol-batch/tickets",
            content=csv,
            headers={"content-type": "text/csv", **as_role("centre", subject="uploader")},
        ),
        *(
            env.client.post("/tickets", json=body, headers=as_role("hotline"))
            for body in [*singles[:5], duplicate, *singles[5:]]
        ),
    )
    batch, *posts = answers
    assert batch.status_code == 201, batch.text
    assert batch.json()["created"] == 40
    assert [p.status_code for p in posts] == [201] * 5 + [200] + [201] * 5, [p.text for p in posts]
    for result in batch.json()["results"]:
        row = await env.ticket(result["ticket_id"])
        assert row is not None and row.category_source == "classifier"
    assert await env.count(TICKETS, TICKETS.c.external_id == duplicate["external_id"]) == 1


async def test_a_group_reserves_the_numbers_it_needs_at_once(env: IntakeEnv) -> None:
    allocator = TicketIdAllocator(env.runtime.engine, block_size=100)
    reserved: list[int] = []
    reserve = allocator._reserve

    async def counted(day: str, size: int) -> tuple[int, int]:
        reserved.append(size)
        return await reserve(day, size)

    allocator._reserve = counted  # type: ignore[method-assign]
    day = datetime(2031, 5, 6, 12, tzinfo=UTC)
    first, second = await asyncio.gather(
        allocator.take([day] * 250), allocator.take([day] * 30 + [day + timedelta(days=1)] * 5)
    )
    # One round trip per day short of numbers, not one per block; the second group found the
    # first day's numbers left over from the first group's reservation.
    assert reserved == [300, 100]
    third = await allocator.take([day] * 20)  # the rest of the reservation, no round trip
    assert reserved == [300, 100]
    numbers = [int(t.split("-")[1]) for t in first + second + third if t.startswith("20310506-")]
    assert sorted(numbers) == list(range(1, 301))
