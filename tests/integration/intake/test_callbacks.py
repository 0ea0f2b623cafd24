"""Callbacks (回访): one revision per result, the latest in effect, each with its event."""

from __future__ import annotations

from services.intake.models import CALLBACKS
from shared.events.intake import FeedbackReceived
from tests.integration.intake.support import IntakeEnv


async def new_ticket(env: IntakeEnv) -> str:
    response = await env.client.post(
        "/tickets",
        json={
            "title": "噪音",
            "content": f"楼下KTV每晚噪音到凌晨{env.unique()}",
            "external_id": env.unique(),
        },
    )
    return response.json()["ticket_id"]  # type: ignore[no-any-return]


async def test_a_second_callback_replaces_the_first_in_effect(env: IntakeEnv) -> None:
    ticket_id = await new_ticket(env)
    first = await env.client.post(
        f"/tickets/{ticket_id}/callbacks",
        json={"resolved": False, "satisfaction": "dissatisfied", "comment": "打13912345678没人接"},
    )
    second = await env.client.post(
        f"/tickets/{ticket_id}/callbacks", json={"resolved": True, "satisfaction": "satisfied"}
    )

    assert (first.status_code, second.status_code) == (201, 201), first.text
    assert first.json()["revision"] == 1 and first.json()["replaces"] is None
    assert second.json() == {
        "feedback_id": f"{ticket_id}-R2",
        "ticket_id": ticket_id,
        "revision": 2,
        "replaces": f"{ticket_id}-R1",
        "created": True,
    }
    feedback = [e for e, _ in await env.events(ticket_id) if isinstance(e, FeedbackReceived)]
    assert [(f.revision, f.replaces, f.satisfaction) for f in feedback] == [
        (1, None, "dissatisfied"),
        (2, f"{ticket_id}-R1", "satisfied"),
    ]
    assert feedback[0].comment is not None and "13912345678" not in feedback[0].comment
    view = (await env.client.get(f"/tickets/{ticket_id}")).json()
    assert [(c["revision"], c["in_effect"]) for c in view["callbacks"]] == [(1, False), (2, True)]
    assert "13912345678" not in str(view)
    assert [h["type"] for h in view["history"]].count("intake.feedback.received") == 2


async def test_the_same_callback_twice_is_recorded_once(env: IntakeEnv) -> None:
    ticket_id = await new_ticket(env)
    body = {"resolved": True, "satisfaction": "basically_satisfied", "external_id": env.unique()}
    first = await env.client.post(f"/tickets/{ticket_id}/callbacks", json=body)
    again = await env.client.post(f"/tickets/{ticket_id}/callbacks", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["feedback_id"] == first.json()["feedback_id"]
    assert await env.count(CALLBACKS, CALLBACKS.c.ticket_id == ticket_id) == 1


async def test_bad_callbacks_name_the_field(env: IntakeEnv) -> None:
    ticket_id = await new_ticket(env)
    unknown = await env.client.post(
        "/tickets/20260101-9999999/callbacks", json={"resolved": True, "satisfaction": "satisfied"}
    )
    overlong = await env.client.post(
        f"/tickets/{'9' * 40}/callbacks", json={"resolved": True, "satisfaction": "satisfied"}
    )
    bad = await env.client.post(
        f"/tickets/{ticket_id}/callbacks", json={"resolved": True, "satisfaction": "great"}
    )
    missing = await env.client.post(f"/tickets/{ticket_id}/callbacks", json={"resolved": True})
    wrong_channel = await env.client.post(
        f"/tickets/{ticket_id}/callbacks",
        json={"resolved": True, "satisfaction": "satisfied", "channel": "hotline-12345-phone"},
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "ticket_id"
    assert overlong.status_code == 404 and overlong.json()["field"] == "ticket_id"
    assert bad.status_code == 422 and "satisfaction" in bad.json()["detail"]
    assert missing.status_code == 422 and "satisfaction" in missing.json()["detail"]
    assert (
        wrong_channel.status_code == 422 and wrong_channel.json()["errors"][0]["field"] == "channel"
    )
    assert await env.count(CALLBACKS, CALLBACKS.c.ticket_id == ticket_id) == 0
