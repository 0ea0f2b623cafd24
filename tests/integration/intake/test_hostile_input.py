"""Hostile input fails its own request only: a bad date, a glued phone number, a bomb of a
workbook, a cross-site form post — each a 4xx naming the problem, and nobody else's request
goes down with it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from services.intake import repeats
from services.intake.models import TICKETS
from services.intake.repeat_lookup import CandidateLoader
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


async def test_a_failing_appeal_fails_only_its_own_share_of_a_repeat_lookup(
    env: IntakeEnv,
) -> None:
    loader = CandidateLoader(env.ctx.reader, policy=env.ctx.ready_pipeline.policy, per_key=5)

    def appeal(at: datetime, n: int) -> repeats.Appeal:
        return repeats.appeal(
            received_at=at,
            title="路灯不亮",
            content="门口路灯坏了",
            citizen_hash=f"hash-{n}",
            policy=loader.policy,
        )

    now = datetime.now(UTC)
    # Appeals built past the API's checks: the look-up's window arithmetic overflows on this one.
    ancient = appeal(datetime(1, 1, 1, tzinfo=UTC), 0)
    results = await asyncio.gather(
        *(loader.earlier([appeal(now, n)]) for n in range(1, 6)),
        loader.earlier([ancient]),
        *(loader.earlier([appeal(now, n)]) for n in range(6, 11)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(results[5], OverflowError), results
    assert all(r == [[]] for i, r in enumerate(results) if i != 5), results
    assert loader.lookups >= 2  # the group was tried together, then the culprit alone


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
