"""Hostile input fails its own request only: a bad date, a glued phone number, a bomb of a
workbook, a cross-site form post — each a 4xx naming the problem, and nobody else's request
goes down with it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import update

from services.intake.canonical import TicketDraft
from services.intake.channels import get_channel
from services.intake.models import TICKETS
from services.intake.queries import encode_cursor
from shared.events.intake import TicketReceived
from tests.integration.intake.support import IntakeEnv
from tests.integration.intake.support import ticket_body as ticket

# --- dates -----------------------------------------------------------------------------------


async def test_a_year_one_date_is_a_422_and_concurrent_valid_posts_all_succeed(
    env: IntakeEnv,
) -> None:
    bad = ticket(env, received_at="0001-01-01T00:00:00+00:00")
    good = [ticket(env) for _ in range(30)]
    answers = await asyncio.gather(
        *(env.client.post("/tickets", json=body) for body in [*good[:15], bad, *good[15:]])
    )
    refused = answers[15]
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "received_at" and "before 1900-01-01" in error["message"]
    accepted = [a for i, a in enumerate(answers) if i != 15]
    assert len(accepted) == 30
    assert [a.status_code for a in accepted] == [201] * 30, [a.text for a in accepted]
    assert await env.count(TICKETS, TICKETS.c.external_id == bad["external_id"]) == 0


async def test_a_1900_date_is_kept_and_numbered_on_its_day(env: IntakeEnv) -> None:
    answer = await env.client.post(
        "/tickets", json=ticket(env, received_at="1900-01-01T00:00:00+08:00")
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["ticket_id"].startswith("19000101-")


async def test_a_failing_appeal_fails_only_its_own_unit_of_a_group(env: IntakeEnv) -> None:
    pipeline = env.ctx.ready_pipeline
    channel = get_channel("hotline-12345-phone")

    def draft(n: int) -> TicketDraft:
        return TicketDraft(
            channel_code=channel.code,
            title="路灯不亮",
            content="门口路灯坏了",
            citizen_phone=env.phone(),
            category_code="0102",
        )

    # A draft built past the API's checks: the look-up's window arithmetic overflows on it.
    ancient = draft(0).model_copy(update={"received_at": datetime(1, 1, 1, tzinfo=UTC)})
    units = [[(channel, draft(n))] for n in range(1, 6)]
    units += [[(channel, ancient)]]
    units += [[(channel, draft(n))] for n in range(6, 11)]
    before = pipeline._loader.lookups
    outcomes = await pipeline.prepare_group(units, now=datetime.now(UTC))
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1 and isinstance(outcomes[5], OverflowError), outcomes
    assert all(isinstance(o, list) and len(o) == 1 for i, o in enumerate(outcomes) if i != 5)
    # The group was looked up together, then unit by unit to find the culprit.
    assert pipeline._loader.lookups - before == 1 + len(units)


# --- content types -----------------------------------------------------------------------------


async def test_json_routes_refuse_a_cross_site_form_body_with_415(env: IntakeEnv) -> None:
    created = await env.client.post("/tickets", json=ticket(env))
    assert created.status_code == 201, created.text
    ticket_id = created.json()["ticket_id"]
    body = b'{"title": "t", "content": "c", "resolved": true, "satisfaction": "satisfied"}'
    # What a cross-site <form enctype="text/plain"> or fetch() may send without a preflight.
    routes = [
        ("/tickets", "application/json"),
        (f"/tickets/{ticket_id}/callbacks", "application/json"),
        ("/channels/grid-worker-app/tickets", "application/json"),
        ("/channels/callback-12345-revisit/callbacks", "application/json"),
        ("/open311/v2/requests.json", "application/x-www-form-urlencoded"),
    ]
    for path, expected in routes:
        for sent in ("text/plain", "text/plain; charset=utf-8", None):
            headers = {"content-type": sent} if sent else {}
            answer = await env.client.post(path, content=body, headers=headers)
            assert answer.status_code == 415, (path, sent, answer.text)
            assert expected in answer.text and "content-type" in answer.text.lower(), answer.text
    assert await env.count(TICKETS, TICKETS.c.title == "t") == 0


async def test_json_with_a_charset_or_a_json_suffix_is_still_json(env: IntakeEnv) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        body = ticket(env)
        answer = await env.client.post(
            "/tickets",
            content=json.dumps(body).encode(),
            headers={"content-type": content_type},
        )
        assert answer.status_code == 201, (content_type, answer.text)


# --- grid codes and free text ----------------------------------------------------------------

GRID = "339902001001002"  # a grid of the city's registry


async def test_a_grid_code_outside_the_registry_is_a_422_and_never_echoed(env: IntakeEnv) -> None:
    for code in ("13811110001", "330106198503120415", "339902003007", "G-1"):
        body = ticket(env, grid_code=code)
        answer = await env.client.post("/tickets", json=body)
        assert answer.status_code == 422, (code, answer.text)
        (error,) = answer.json()["errors"]
        assert error["field"] == "grid_code" and code not in answer.text, answer.text
        assert await env.count(TICKETS, TICKETS.c.external_id == body["external_id"]) == 0
    native = {
        "eventCode": env.unique("wg"),
        "gridCode": "13811110001",
        "eventTitle": "井盖缺失",
        "eventDesc": "路口井盖缺失",
    }
    answer = await env.client.post("/channels/grid-worker-app/tickets", json=native)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "gridCode"


async def test_a_registry_grid_code_travels_as_given(env: IntakeEnv) -> None:
    answer = await env.client.post("/tickets", json=ticket(env, grid_code=GRID))
    assert answer.status_code == 201, answer.text
    ticket_id = answer.json()["ticket_id"]
    ((event, _row),) = await env.events(ticket_id)
    assert isinstance(event, TicketReceived)
    assert (event.location.grid_code, event.location.area_code) == (GRID, GRID)
    view = (await env.client.get(f"/tickets/{ticket_id}")).json()
    assert view["grid_code"] == view["location"]["grid_code"] == GRID


async def test_a_ticket_view_masks_numbers_in_any_field_not_only_known_ones(
    env: IntakeEnv,
) -> None:
    answer = await env.client.post("/tickets", json=ticket(env, address=env.address()))
    ticket_id = answer.json()["ticket_id"]
    # A row stored before grid codes were checked, with a phone number where a code should be.
    async with env.runtime.engine.begin() as conn:
        await conn.execute(
            update(TICKETS)
            .where(TICKETS.c.ticket_id == ticket_id)
            .values(grid_code="13811110001", area_code="0013811110012")
        )
    view = await env.client.get(f"/tickets/{ticket_id}")
    assert view.status_code == 200, view.text
    assert "13811110001" not in view.text and "13811110012" not in view.text
    assert view.json()["location"]["grid_code"] == "138****0001"
    assert view.json()["ticket_id"] == ticket_id
    listed = await env.client.get("/tickets", params={"received_from": view.json()["received_at"]})
    assert "13811110001" not in listed.text


async def test_a_year_one_filter_is_a_422_not_a_server_error(env: IntakeEnv) -> None:
    for name in ("received_from", "received_to"):
        answer = await env.client.get("/tickets", params={name: "0001-01-01T00:00:00+08:00"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == f"query.{name}", answer.text
    answer = await env.client.get(
        "/open311/v2/requests.json", params={"start_date": "0001-01-01T00:00:00+08:00"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()[0]["field"] == "start_date"


async def test_a_forged_cursor_from_year_one_is_a_422(env: IntakeEnv) -> None:
    forged = encode_cursor(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8))), "x")
    answer = await env.client.get("/tickets", params={"cursor": forged})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "cursor"
