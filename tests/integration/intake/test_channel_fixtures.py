"""Every one of the 72 channels posts its native fixture through HTTP and gets stored tickets,
each with its ``TicketReceived`` — masked, scrubbed, with the channel's time limits — and a
second post of the same payload is answered with the same tickets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.intake.channels import Channel, callback_channels, channels
from services.intake.models import TICKETS, outbox_table
from shared import pii
from shared.events.intake import TicketReceived
from tests.integration.intake.support import EXPECTED, IntakeEnv, fixture


def _numbers(row: Any) -> set[str]:
    """The clear-text phone and ID numbers of a stored ticket (none may leave intake)."""
    found = set()
    if row.citizen_phone:
        found |= {row.citizen_phone, pii.normalize_phone(row.citizen_phone) or ""}
    if row.citizen_id_number:
        found.add(row.citizen_id_number)
    return {n for n in found if len(n) >= 7}


async def _post(env: IntakeEnv, channel: Channel) -> Any:
    body, content_type = fixture(channel.code)
    return await env.client.post(
        f"/channels/{channel.code}/tickets", content=body, headers={"content-type": content_type}
    )


@pytest.mark.parametrize("channel", channels(), ids=lambda c: c.code)
async def test_channel_fixture_is_stored_with_its_event(env: IntakeEnv, channel: Channel) -> None:
    expected = EXPECTED[channel.code]
    response = await _post(env, channel)

    if not channel.active:
        assert response.status_code == 410, response.text
        assert response.json()["field"] == "code"
        assert await env.count(TICKETS, TICKETS.c.channel == channel.code) == 0
        return
    batch = channel.payload_format in ("csv", "xlsx")
    rows = expected.get("rows", 1)
    if batch:
        result = response.json()
        assert response.status_code == (207 if expected.get("errors") else 201), response.text
        assert (result["created"], result["rejected"]) == (rows, expected.get("errors", 0))
        rejected = [r for r in result["results"] if r["status"] == "rejected"]
        assert all(r["row"] > 1 and r["errors"][0]["field"] for r in rejected)
        ticket_ids = [r["ticket_id"] for r in result["results"] if r["status"] == "created"]
    else:
        assert response.status_code == 201, response.text
        ticket_ids = [response.json()["ticket_id"]]
    assert await env.count(TICKETS, TICKETS.c.channel == channel.code) == rows

    first = await env.ticket(ticket_ids[0])
    assert first.external_id == expected.get("external_id", first.external_id)
    for ticket_id in ticket_ids:
        stored = await env.ticket(ticket_id)
        events = await env.events(ticket_id)
        assert len(events) == 1, f"{ticket_id}: one event per ticket"
        event, outbox_row = events[0]
        assert isinstance(event, TicketReceived)
        assert event.channel == channel.code and event.ticket_id == ticket_id
        assert event.time_limit_profile == stored.time_limit_profile
        assert event.category_code == stored.category_code
        if channel.is_enterprise_channel:
            assert event.is_enterprise and event.time_limit_profile == "enterprise_2115"
        record = b"".join(
            (
                outbox_row["payload"],
                outbox_row["headers"].encode(),
                outbox_row["header_block"] or b"",
                outbox_row["key"].encode(),
            )
        )
        for number in _numbers(stored):
            assert number.encode() not in record, f"{number} left intake on {channel.code}"
        view = await env.client.get(f"/tickets/{ticket_id}")
        assert view.status_code == 200
        for number in _numbers(stored):
            assert number not in view.text
    assert first.time_limit_profile == expected.get("profile", "standard")
    if "attachments" in expected:
        assert len(first.attachments) == expected["attachments"]

    # The same payload again: the same tickets for every row that carries the channel's id.
    if expected.get("external_id"):
        again = await _post(env, channel)
        if batch:
            results = {r["row"]: r for r in again.json()["results"]}
            before = {r["row"]: r for r in result["results"]}
            anonymous = sum(
                1 for r in before.values() if r["status"] == "created" and not r["external_id"]
            )
            for number, earlier in before.items():
                if earlier["status"] == "created" and earlier["external_id"]:
                    assert results[number]["status"] == "existing"
                    assert results[number]["ticket_id"] == earlier["ticket_id"]
            assert await env.count(TICKETS, TICKETS.c.channel == channel.code) == rows + anonymous
        else:
            assert again.status_code == 200, again.text
            assert again.json() == {**response.json(), "created": False}
            assert await env.count(TICKETS, TICKETS.c.channel == channel.code) == rows
        assert await env.count(outbox_table, outbox_table.c.key.in_(ticket_ids)) == len(ticket_ids)


@pytest.mark.parametrize("channel", callback_channels(), ids=lambda c: c.code)
async def test_callback_fixture_needs_its_ticket(env: IntakeEnv, channel: Channel) -> None:
    body, content_type = fixture(channel.code)
    headers = {"content-type": content_type}

    unknown = await env.client.post(
        f"/channels/{channel.code}/callbacks", content=body, headers=headers
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "ticket_id"

    posted = await env.client.post(
        "/tickets", json={"title": "积水", "content": "车库积水", "external_id": env.unique()}
    )
    ticket_id = posted.json()["ticket_id"]
    payload = orjson.loads(body)
    payload["gdbh"] = ticket_id
    accepted = await env.client.post(
        f"/channels/{channel.code}/callbacks", content=orjson.dumps(payload), headers=headers
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["ticket_id"] == ticket_id and accepted.json()["revision"] == 1
