"""Repeat appeals (same citizen, or same place and near-identical text, within the window) and
e-mail attachments (content-addressed blobs stored in the ticket's transaction)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from services.intake.models import BLOBS, TICKETS
from tests.integration.intake.support import IntakeEnv

MAIL_CHANNEL = "hotline-12345-email"


async def post(env: IntakeEnv, **fields: Any) -> dict[str, Any]:
    body = {"title": "路灯不亮", "content": "小区门口的路灯坏了一周，晚上很黑。", **fields}
    response = await env.client.post("/tickets", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_the_same_citizen_repeats_and_the_chain_keeps_counting(env: IntakeEnv) -> None:
    phone = env.phone()
    first = await post(env, citizen_phone=phone, content=f"第一次反映{env.unique()}")
    later = [
        await post(env, citizen_phone=phone, content=f"又一次反映不同的事{env.unique()}")
        for _ in range(7)
    ]
    assert first["repeat_of"] is None and first["repeat_count"] == 0
    assert [t["repeat_of"] for t in later] == [first["ticket_id"]] * 7
    # Only the latest few are compared, but the chain still counts every earlier appeal.
    assert [t["repeat_count"] for t in later] == [1, 2, 3, 4, 5, 6, 7]
    stored = await env.ticket(later[-1]["ticket_id"])
    assert (stored.repeat_of, stored.repeat_count) == (first["ticket_id"], 7)


async def test_stored_candidates_are_kept_without_their_shingles(env: IntakeEnv) -> None:
    """What the look-up keeps of the tickets it found is what ``decide`` reads of a stored
    candidate — its time, keys and links; the group's pass counts the shingles on their packed
    bytes — and no shingle set, which every full collection of the garbage collector would read
    through for as long as the ticket is kept."""
    phone = env.phone()
    first = await post(env, citizen_phone=phone, content=f"第一次反映{env.unique()}")
    again = await post(env, citizen_phone=phone, content=f"又一次反映{env.unique()}")
    assert again["repeat_of"] == first["ticket_id"]
    kept = env.app.state.runtime.context.loader.shingles
    found = kept.ready(first["ticket_id"])
    assert found is not None and found.appeal.ticket_id == first["ticket_id"]
    assert found.appeal.shingles == frozenset()
    assert kept.ready(again["ticket_id"]) is None  # not yet anyone's candidate


async def test_the_same_place_and_text_repeats_another_text_does_not(env: IntakeEnv) -> None:
    address = env.address()
    text = f"{address}门口的路灯坏了一周，晚上很黑，老人出门不方便。"
    first = await post(env, address=address, content=text, citizen_phone=env.phone())
    same = await post(env, address=address, content=text + "请尽快处理", citizen_phone=env.phone())
    other = await post(
        env, address=address, content="小区里有人高空抛物，砸坏了车窗。", citizen_phone=env.phone()
    )
    assert same["repeat_of"] == first["ticket_id"] and same["repeat_count"] == 1
    assert other["repeat_of"] is None


async def test_an_address_outside_every_grid_finds_earlier_appeals_there(env: IntakeEnv) -> None:
    address = f"外省某县{env.unique('巷')}号院"  # no grid: candidates are found by the address
    text = f"{address}的下水道堵了三天，污水漫到路上，气味很大。"
    first = await post(env, address=address, content=text, citizen_phone=env.phone())
    same = await post(env, address=address, content=text + "请尽快疏通", citizen_phone=env.phone())
    stored = await env.ticket(same["ticket_id"])
    assert stored.grid_code is None and stored.address_key
    assert same["repeat_of"] == first["ticket_id"] and same["repeat_count"] == 1


async def test_appeals_outside_the_window_are_not_repeats(env: IntakeEnv) -> None:
    phone = env.phone()
    now = datetime.now(UTC)
    old = await post(env, citizen_phone=phone, received_at=(now - timedelta(days=40)).isoformat())
    recent = await post(env, citizen_phone=phone, received_at=now.isoformat())
    assert old["repeat_of"] is None and recent["repeat_of"] is None


def mail(env: IntakeEnv, *attachments: tuple[str, bytes]) -> bytes:
    message = EmailMessage()
    message["From"] = "张三 <zhangsan@example.cn>"
    message["To"] = "mayor@fengqiao.gov.cn"
    message["Subject"] = "小区噪音问题"
    message["Message-ID"] = f"<{env.unique()}@example.cn>"
    message["Date"] = "Sun, 07 Dec 2025 09:00:00 +0800"
    message.set_content("市长您好：小区旁工地夜间施工，噪音很大。联系电话：13912345678")
    for name, data in attachments:
        message.add_attachment(data, maintype="image", subtype="jpeg", filename=name)
    return message.as_bytes()


async def post_mail(env: IntakeEnv, data: bytes) -> Any:
    return await env.client.post(
        f"/channels/{MAIL_CHANNEL}/tickets",
        content=data,
        headers={"content-type": "message/rfc822"},
    )


async def test_mail_attachments_are_stored_once_by_content(env: IntakeEnv) -> None:
    photo = b"\xff\xd8\xff" + env.unique().encode() * 100
    before = await env.count(BLOBS)
    first = await post_mail(env, mail(env, ("工地.jpg", photo), ("again.jpg", photo)))
    second = await post_mail(env, mail(env, ("same-photo.jpg", photo)))

    assert (first.status_code, second.status_code) == (201, 201), first.text
    assert await env.count(BLOBS) == before + 1
    ticket_id = first.json()["ticket_id"]
    view = (await env.client.get(f"/tickets/{ticket_id}")).json()
    assert [a["filename"] for a in view["attachments"]] == ["工地.jpg", "again.jpg"]
    sha = view["attachments"][0]["sha256"]
    download = await env.client.get(f"/tickets/{ticket_id}/attachments/{sha}")
    assert download.status_code == 200 and download.content == photo
    assert download.headers["content-type"] == "image/jpeg"
    # a download, never rendered in the operator's browser
    assert download.headers["content-disposition"] == "attachment"
    assert download.headers["x-content-type-options"] == "nosniff"
    missing = await env.client.get(f"/tickets/{ticket_id}/attachments/{'0' * 64}")
    assert missing.status_code == 404
    stored = await env.ticket(ticket_id)
    assert stored.citizen_email == "zhangsan@example.cn" and stored.citizen_phone == "13912345678"
    assert view["citizen"]["email_masked"] == "z***@example.cn"


async def test_oversized_attachments_and_mails_are_413_and_store_nothing(env: IntakeEnv) -> None:
    before = (await env.count(TICKETS), await env.count(BLOBS))
    big_attachment = await post_mail(env, mail(env, ("big.jpg", b"x" * (40 << 10))))
    big_mail = await post_mail(
        env, mail(env, *[(f"{n}.jpg", b"y" * (30 << 10)) for n in range(10)])
    )
    assert big_attachment.status_code == 413
    assert big_attachment.json()["field"] == "attachment big.jpg"
    assert big_mail.status_code == 413 and big_mail.json()["field"] == "body"
    assert (await env.count(TICKETS), await env.count(BLOBS)) == before
