"""Hostile input fails its own request only: a bad date, a glued phone number, a bomb of a
workbook, a cross-site form post — each a 4xx naming the problem, and nobody else's request
goes down with it."""

from __future__ import annotations

import asyncio
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
