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
from services.intake import ids as ids_module
from services.intake import pipeline as pipeline_module
from services.intake.canonical import AttachmentMeta, TicketDraft
from services.intake.channels import get_channel
from services.intake.ids import TicketIdAllocator
from services.intake.models import TICKETS, metadata, outbox_table
from shared.events.base import encode, encode_fields
from shared.events.intake import TicketReceived
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


def _reservations(allocator: TicketIdAllocator) -> list[int]:
    """The sizes of the allocator's reservations from now on, as it makes them."""
    reserved: list[int] = []
    reserve = allocator._reserve

    async def counted(day: str, size: int) -> tuple[int, int]:
        reserved.append(size)
        return await reserve(day, size)

    allocator._reserve = counted  # type: ignore[method-assign]
    return reserved


async def test_a_group_reserves_the_numbers_it_needs_at_once(env: IntakeEnv) -> None:
    allocator = TicketIdAllocator(env.runtime.engine, block_size=100)
    reserved = _reservations(allocator)
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


async def test_reservations_grow_while_they_come_one_soon_after_another(env: IntakeEnv) -> None:
    """A steady stream of files reserves twice the blocks each time, up to ``max_blocks``; a
    quiet spell starts again at one block; every number is handed out once, in order."""
    now = [0.0]
    allocator = TicketIdAllocator(
        env.runtime.engine, block_size=100, max_blocks=4, clock=lambda: now[0]
    )
    reserved = _reservations(allocator)
    day = datetime(2031, 6, 7, 12, tzinfo=UTC)
    taken = []
    for _ in range(12):  # files of 100 rows, 0.1 s apart
        taken += await allocator.take([day] * 100)
        now[0] += 0.1
    assert reserved == [100, 200, 400, 400, 400]
    now[0] += ids_module.BUSY_SECONDS  # quiet: one block again
    taken += await allocator.take([day] * 450)  # 300 left over, 150 more: two blocks
    taken += await allocator.take([day] * 100)  # 50 left over: soon after, twice one block
    assert reserved == [100, 200, 400, 400, 400, 200, 200]
    assert [int(t.split("-")[1]) for t in taken] == list(range(1, 1200 + 450 + 100 + 1))


async def test_a_groups_events_are_written_in_one_call_and_a_unit_it_cannot_vouch_for_alone(
    env: IntakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group's events are written from their fields at once; a unit whose fields only the
    model can take (an attachment) makes each unit go by itself, the others still written from
    their fields, and every record is the one ``encode`` gives for the validated event."""
    calls: list[tuple[list[dict[str, Any]], Any]] = []

    def spy(cls: Any, fields: Any) -> Any:
        out = encode_fields(cls, fields)
        calls.append((list(fields), out))
        return out

    monkeypatch.setattr(pipeline_module, "encode_fields", spy)
    pipeline = env.ctx.ready_pipeline
    channel = get_channel("hotline-12345-phone")

    def unit(**extra: Any) -> list[tuple[Any, TicketDraft]]:
        fields = {"title": "路灯不亮", "content": "门口路灯坏了", "category_code": "0102"}
        draft = TicketDraft(channel_code=channel.code, citizen_phone=env.phone(), **fields, **extra)
        return [(channel, draft)]

    photo = AttachmentMeta(filename="a.jpg", content_type="image/jpeg", size=3, sha256="0" * 64)
    plain = [unit() for _ in range(3)]
    outcomes = await pipeline.prepare_group(plain, now=datetime.now(UTC))
    assert all(isinstance(o, list) for o in outcomes), outcomes
    assert [len(f) for f, out in calls] == [3] and calls[0][1] is not None

    calls.clear()
    mixed = [unit(), unit(attachments=(photo,)), unit()]
    outcomes = await pipeline.prepare_group(mixed, now=datetime.now(UTC))
    assert all(isinstance(o, list) and len(o) == 1 for o in outcomes), outcomes
    assert [(len(f), out is not None) for f, out in calls] == [
        (3, False),
        (1, True),
        (1, False),
        (1, True),
    ]
    written = [(f[0], out[0]) for f, out in calls[1:] if out is not None]
    assert [w for _, w in written] == [outcomes[0][0].event, outcomes[2][0].event]  # type: ignore[index]
    for fields, w in written:
        event = TicketReceived.model_validate(
            {**fields, "event_id": w.event_id, "occurred_at": w.occurred_at}
        )
        assert w.record == encode(event)
    assert outcomes[1][0].event.record.value.count(b"a.jpg") == 1  # type: ignore[index]
