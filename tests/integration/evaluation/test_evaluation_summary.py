"""Evaluation's projection and /summary: order-independent counts, the counted callback, and who
may read the committee's metrics."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.evaluation.app import create_app
from services.evaluation.models import ledger_table
from services.evaluation.settings import EvaluationSettings
from shared.events import INTAKE_TOPIC
from tests.integration.evaluation.support import (
    COMMITTEE,
    EvaluationEnv,
    assigned,
    feedback,
    received,
)
from tests.support import Database, as_role, lifespan, make_settings, wait_until


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


async def test_a_dispatch_counted_before_its_receipt_hides_no_waiting_ticket(
    env: EvaluationEnv,
) -> None:
    early, waiting = env.ticket_id(), env.ticket_id()
    before = await env.summary()
    # ``early``'s assignment (dispatch topic) overtakes its receipt (intake topic), while
    # ``waiting`` is received and really is waiting.
    await env.fold(assigned(early, "DIST-ZF-330602"), received(waiting))
    assert delta(await env.summary(), before) == {
        "received": 1,
        "dispatched": 1,
        "awaiting_dispatch": 1,
        "feedback": 0,
    }
    await env.fold(received(early))
    assert delta(await env.summary(), before) == {
        "received": 2,
        "dispatched": 1,
        "awaiting_dispatch": 1,
        "feedback": 0,
    }
    await env.fold(assigned(waiting, "DIST-ZF-330602"))
    assert delta(await env.summary(), before) == {
        "received": 2,
        "dispatched": 2,
        "awaiting_dispatch": 0,
        "feedback": 0,
    }


async def test_the_highest_callback_revision_counts_whatever_the_arrival_order(
    env: EvaluationEnv,
) -> None:
    ticket = env.ticket_id()
    first = feedback(ticket, 1, resolved=False, satisfaction="dissatisfied")
    second = feedback(ticket, 2, resolved=True, satisfaction="satisfied")
    before = await env.summary()
    await env.fold(received(ticket), second, first)  # the older callback arrives last
    fact = await env.fact(ticket)
    assert fact is not None
    assert (fact.resolved, fact.satisfaction) == (True, "satisfied")
    assert (fact.feedback_id, fact.feedback_revision) == (f"{ticket}-R2", 2)
    # Redelivered or replayed (a new record, even a new event id): nothing changes.
    await env.fold(first, second, first.model_copy(update={"event_id": uuid.uuid4()}))
    fact = await env.fact(ticket)
    assert fact is not None
    assert (fact.feedback_revision, fact.resolved, fact.satisfaction) == (2, True, "satisfied")
    # A newer revision replaces it.
    third = feedback(ticket, 3, resolved=True, satisfaction="basically_satisfied")
    await env.fold(third)
    fact = await env.fact(ticket)
    assert fact is not None
    assert (fact.feedback_revision, fact.satisfaction) == (3, "basically_satisfied")
    assert delta(await env.summary(), before)["feedback"] == 1  # one called-back ticket


async def test_an_older_callback_arriving_late_on_the_bus_is_ignored(env: EvaluationEnv) -> None:
    ticket = env.ticket_id()
    first = feedback(ticket, 1, resolved=False, satisfaction="dissatisfied")
    second = feedback(ticket, 2, resolved=True, satisfaction="satisfied")
    for event in (second, first):
        await env.publish(INTAKE_TOPIC, event)

    async def both_consumed() -> bool:
        return await env.consumed(second) and await env.consumed(first)

    await wait_until(both_consumed, timeout=20, what="evaluation to consume both callbacks")
    fact = await env.fact(ticket)
    assert fact is not None
    assert (fact.resolved, fact.satisfaction) == (True, "satisfied")
    assert fact.feedback_revision == 2


async def test_the_latest_assignment_names_the_department_whatever_the_arrival_order(
    env: EvaluationEnv,
) -> None:
    ticket = env.ticket_id()
    original = assigned(ticket, "DIST-ZF-330602", minutes=0)
    rerouted = assigned(ticket, "DIST-SW-330602", minutes=90)  # after a return was approved
    await env.fold(rerouted, original, received(ticket))
    fact = await env.fact(ticket)
    assert fact is not None
    assert fact.department_code == "DIST-SW-330602"
    assert fact.dispatched_at == original.occurred_at  # the ticket was dispatched at the first


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (COMMITTEE, 200),
        (as_role("operator"), 200),
        (as_role("hotline"), 403),
        (as_role("department", unit="DIST-ZF-330602"), 403),
        (as_role("grid_worker", unit="GRID-WG-1"), 403),
        (as_role("centre"), 403),
        (as_role("mediator"), 403),
        ({}, 401),  # token mode: no token, no metrics
        ({"x-fengqiao-role": "operator"}, 401),  # unsigned headers prove nothing
    ],
)
async def test_only_the_committee_and_operators_read_the_metrics(
    env: EvaluationEnv, headers: dict[str, str], status: int
) -> None:
    response = await env.client.get("/summary", headers=headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert "committee" in response.json()["detail"]


async def test_the_embedded_default_serves_the_summary_to_an_anonymous_caller(
    broker: Any, sqlite_db: Database, prefix: str
) -> None:
    # README: ``curl -s http://127.0.0.1:8004/summary`` against ``make run`` (AUTH_MODE=open).
    settings = await make_settings(
        EvaluationSettings,
        service="evaluation",
        database=sqlite_db,
        bootstrap=broker.bootstrap,
        prefix=prefix,
    )
    assert settings.auth_mode == "open"
    app = create_app(settings)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as client,
    ):
        response = await client.get("/summary")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "received": 0,
        "dispatched": 0,
        "awaiting_dispatch": 0,
        "feedback": 0,
    }


async def test_applied_events_are_recorded_by_the_ledger_alone_and_a_redelivery_is_refused(
    env: EvaluationEnv,
) -> None:
    ticket = env.ticket_id()
    first = received(ticket)
    second = feedback(ticket, 1, resolved=True, satisfaction="satisfied")
    duplicates = env.runtime.metrics.events_duplicate.labels(second.event_type)
    refused = duplicates._value.get()
    for event in (first, second):
        await env.publish(INTAKE_TOPIC, event)

    async def both_consumed() -> bool:
        return await env.consumed(first) and await env.consumed(second)

    await wait_until(both_consumed, timeout=20, what="evaluation to apply both events")
    ids = [str(first.event_id), str(second.event_id)]
    inbox = env.runtime.inbox_table
    async with env.runtime.engine.connect() as conn:
        inboxed = (
            await conn.execute(select(inbox.c.event_id).where(inbox.c.event_id.in_(ids)))
        ).all()
        ledgered = (
            await conn.execute(
                select(ledger_table.c.event_id).where(ledger_table.c.event_id.in_(ids))
            )
        ).all()
    assert inboxed == [] and len(ledgered) == 2

    # Redelivered (the same event id): the ledger refuses it, and nothing changes.
    await env.publish(INTAKE_TOPIC, second)

    async def redelivery_refused() -> bool:
        return bool(duplicates._value.get() > refused)

    await wait_until(redelivery_refused, timeout=20, what="the redelivery refused")
    fact = await env.fact(ticket)
    assert fact is not None
    assert (fact.feedback_revision, fact.resolved, fact.satisfaction) == (1, True, "satisfied")
    async with env.runtime.engine.connect() as conn:
        count = (
            await conn.execute(
                select(func.count())
                .select_from(ledger_table)
                .where(ledger_table.c.event_id.in_(ids))
            )
        ).scalar_one()
    assert count == 2
