"""The canonical ``POST /tickets``, idempotency, the 4xx answers (each naming its field), and the
ticket list with its filters and pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.intake.models import TICKETS, outbox_table
from shared.events.intake import TicketReceived
from tests.integration.intake.support import IntakeEnv
from tests.integration.intake.support import ticket_body as ticket


async def test_a_ticket_is_stored_with_its_event_and_the_retry_gets_the_same_id(
    env: IntakeEnv,
) -> None:
    body = ticket(env, citizen_id_number="330106198503120415", address=env.address())
    first = await env.client.post("/tickets", json=body)
    second = await env.client.post("/tickets", json=body)

    assert (first.status_code, second.status_code) == (201, 200), first.text
    ticket_id = first.json()["ticket_id"]
    assert second.json()["ticket_id"] == ticket_id and second.json()["created"] is False
    assert await env.count(TICKETS, TICKETS.c.external_id == body["external_id"]) == 1
    ((event, _row),) = await env.events(ticket_id)
    assert isinstance(event, TicketReceived)
    assert (
        event.citizen.phone_masked == f"{body['citizen_phone'][:3]}****{body['citizen_phone'][-4:]}"
    )
    assert event.citizen.citizen_hash and len(event.citizen.citizen_hash) == 64
    assert event.location.grid_code is not None and event.location.area_code is not None
    assert event.category_source == "channel"
    stored = await env.ticket(ticket_id)
    assert stored.citizen_phone == body["citizen_phone"]  # clear text stays in intake's store
    assert stored.citizen_id_number == "330106198503120415"


async def test_control_characters_are_dropped_not_a_server_error(env: IntakeEnv) -> None:
    body = ticket(
        env, title="路灯\u0000不亮", content="灯坏了\u0007三天", address="文一路\u0000100号"
    )
    response = await env.client.post("/tickets", json=body)
    assert response.status_code == 201, response.text  # PostgreSQL refuses NUL in text
    stored = await env.ticket(response.json()["ticket_id"])
    assert (stored.title, stored.content, stored.address) == (
        "路灯不亮",
        "灯坏了三天",
        "文一路100号",
    )


async def test_a_phone_number_used_as_external_id_is_masked_in_listings(env: IntakeEnv) -> None:
    phone = env.phone()
    created = await env.client.post("/tickets", json=ticket(env, external_id=phone))
    ticket_id = created.json()["ticket_id"]
    view = (await env.client.get(f"/tickets/{ticket_id}")).json()
    assert view["external_id"] == f"{phone[:3]}****{phone[-4:]}"
    stored = await env.ticket(ticket_id)
    assert stored.external_id == phone  # the idempotency key itself stays as sent


async def test_the_same_external_id_on_another_channel_is_another_ticket(env: IntakeEnv) -> None:
    external_id = env.unique("shared-id")
    a = await env.client.post("/tickets", json=ticket(env, external_id=external_id))
    b = await env.client.post(
        "/tickets", json=ticket(env, external_id=external_id, channel="hotline-12345-web")
    )
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["ticket_id"] != b.json()["ticket_id"]


async def test_numbers_in_free_text_are_scrubbed_from_the_event(env: IntakeEnv) -> None:
    body = ticket(
        env,
        content="我的电话13912345678，身份证330106199003072317，地址写错了请联系0571-87654321。",
        address="解放路1号 联系人电话 13800001111",
    )
    response = await env.client.post("/tickets", json=body)
    ((event, row),) = await env.events(response.json()["ticket_id"])
    for number in ("13912345678", "330106199003072317", "87654321", "13800001111"):
        assert number.encode() not in row["payload"]
    assert "139****5678" in event.content and "330106********2317" in event.content


async def test_the_classifier_fills_a_missing_category(env: IntakeEnv) -> None:
    response = await env.client.post(
        "/tickets",
        json=ticket(env, category_code=None, title="路灯不亮", content="小区门口的路灯坏了一周"),
    )
    assert response.status_code == 201
    assert response.json()["category_code"] == "0102"
    ((event, _),) = await env.events(response.json()["ticket_id"])
    assert event.category_source == "classifier"


async def test_a_hazard_raises_urgency_and_an_enterprise_gets_2115(env: IntakeEnv) -> None:
    response = await env.client.post(
        "/tickets",
        json=ticket(
            env,
            title="楼道燃气泄漏",
            content="楼道里燃气味很重，怀疑漏气",
            enterprise_name="枫桥机械厂",
        ),
    )
    stored = await env.ticket(response.json()["ticket_id"])
    assert stored.urgency == "urgent"
    assert stored.is_enterprise and stored.time_limit_profile == "enterprise_2115"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": "没有标题"}, "title"),
        ({"title": "x", "content": "y", "category_code": "abc"}, "category_code"),
        ({"title": "x", "content": "y", "category_code": "9999"}, "category_code"),
        ({"title": "x", "content": "y", "citizen_phone": "call me"}, "citizen_phone"),
        ({"title": "x", "content": "y", "citizen_id_number": "123"}, "citizen_id_number"),
        ({"title": "x", "content": "y", "longitude": 120.5}, "latitude"),
        ({"title": "x", "content": "y", "channel": "no-such-channel"}, "channel"),
        ({"title": "x", "content": "y", "channel": "callback-12345-revisit"}, "channel"),
        ({"title": "x", "content": "y", "urgency": "now"}, "urgency"),
        ({"title": "x", "content": "y", "surprise": 1}, "surprise"),
        ({"title": "x", "content": "y", "received_at": "2100-01-01T08:00:00+08:00"}, "received_at"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(
    env: IntakeEnv, body: dict[str, Any], field: str
) -> None:
    before = await env.count(outbox_table)
    response = await env.client.post("/tickets", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    assert await env.count(outbox_table) == before


async def test_malformed_json_is_a_422(env: IntakeEnv) -> None:
    response = await env.client.post(
        "/tickets",
        content=b'{"title": "x", "content": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and "json" in response.text.lower()


async def test_an_inactive_channel_is_refused(env: IntakeEnv) -> None:
    response = await env.client.post("/tickets", json=ticket(env, channel="hotline-12358"))
    assert response.status_code == 410 and "inactive" in response.json()["detail"]


async def test_unknown_channel_and_ticket_are_404(env: IntakeEnv) -> None:
    channel = await env.client.post("/channels/no-such-channel/tickets", json={})
    unknown = await env.client.get("/tickets/20260101-9999999")
    assert channel.status_code == 404 and channel.json()["field"] == "code"
    assert unknown.status_code == 404 and unknown.json()["field"] == "ticket_id"


async def test_bodies_over_their_limits_are_413(env: IntakeEnv) -> None:
    over_route = ticket(env, content="长" * 30_000)  # 90 KB: over /tickets' 64 KiB
    route = await env.client.post("/tickets", json=over_route)
    assert route.status_code == 413, route.text
    assert route.json()["field"] == "body" and route.json()["limit_bytes"] == 64 << 10

    over_all = b"x" * (600 << 10)  # over the global 512 KiB: refused before anything reads it
    everything = await env.client.post(
        "/channels/grid-patrol-batch/tickets",
        content=over_all,
        headers={"content-type": "text/csv"},
    )
    assert everything.status_code == 413 and "limit" in everything.json()["detail"]


async def test_roles_are_checked(env: IntakeEnv) -> None:
    department = {"x-fengqiao-role": "department", "x-fengqiao-department": "city-housing"}
    committee = {"x-fengqiao-role": "committee"}
    posted = await env.client.post("/tickets", json=ticket(env), headers=department)
    read = await env.client.get("/tickets", headers=committee)
    write = await env.client.post("/tickets", json=ticket(env), headers=committee)
    assert (posted.status_code, read.status_code, write.status_code) == (403, 200, 403)


async def test_the_list_filters_and_pages(env: IntakeEnv) -> None:
    channel = "hotline-12345-app"
    base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    ids = []
    for n in range(5):
        response = await env.client.post(
            "/tickets",
            json=ticket(
                env,
                channel=channel,
                received_at=(base + timedelta(hours=n)).isoformat(),
                category_code="0102" if n % 2 == 0 else "0203",
                title=f"列表测试{n}",
                content=f"列表测试第{n}件，内容各不相同{env.unique()}",
            ),
        )
        ids.append(response.json()["ticket_id"])

    page = (await env.client.get("/tickets", params={"channel": channel, "limit": 2})).json()
    assert [t["ticket_id"] for t in page["items"]] == [ids[4], ids[3]]
    second = await env.client.get(
        "/tickets", params={"channel": channel, "limit": 2, "cursor": page["next_cursor"]}
    )
    third = await env.client.get(
        "/tickets",
        params={"channel": channel, "limit": 2, "cursor": second.json()["next_cursor"]},
    )
    assert [t["ticket_id"] for t in second.json()["items"]] == [ids[2], ids[1]]
    assert [t["ticket_id"] for t in third.json()["items"]] == [ids[0]]
    assert third.json()["next_cursor"] is None

    def listed(**params: Any) -> Any:
        return env.client.get("/tickets", params={"channel": channel, **params})

    leaf = (await listed(category="0203")).json()["items"]
    top = (await listed(category="02")).json()["items"]
    window = (
        await listed(
            received_from=(base + timedelta(minutes=30)).isoformat(),
            received_to=(base + timedelta(hours=2, minutes=30)).isoformat(),
        )
    ).json()["items"]
    statuses = (await listed(status="received,completed")).json()["items"]
    none = (await listed(status="completed")).json()["items"]
    assert {t["ticket_id"] for t in leaf} == {ids[1], ids[3]} == {t["ticket_id"] for t in top}
    assert {t["ticket_id"] for t in window} == {ids[1], ids[2]}
    assert len(statuses) == 5 and none == []

    bad_cursor = await listed(cursor="not-a-cursor")
    bad_category = await listed(category="x")
    bad_limit = await listed(limit=0)
    assert bad_cursor.status_code == 422 and bad_cursor.json()["field"] == "cursor"
    assert bad_category.status_code == 422 and "category" in bad_category.json()["detail"]
    assert bad_limit.status_code == 422 and "limit" in bad_limit.json()["detail"]


async def test_channels_are_listed_with_where_to_post(env: IntakeEnv) -> None:
    listed = (await env.client.get("/channels")).json()
    appeal = [c for c in listed if c["kind"] == "appeal"]
    callback = (await env.client.get("/channels", params={"kind": "callback"})).json()
    one = (await env.client.get("/channels/hotline-12345-phone")).json()
    assert len(appeal) == 72 and len({c["code"] for c in appeal}) == 72
    assert [c["code"] for c in callback] == ["callback-12345-revisit"]
    assert callback[0]["post_url"] == "/channels/callback-12345-revisit/callbacks"
    assert one["post_url"] == "/channels/hotline-12345-phone/tickets"
    assert one["fields"]["title"] == ["appealTitle"] and one["content_types"] == [
        "application/json"
    ]
    assert {c["family"] for c in appeal} >= {"phone", "web", "mail", "grid", "media"}
    unknown = await env.client.get("/channels/no-such-channel")
    assert unknown.status_code == 404
