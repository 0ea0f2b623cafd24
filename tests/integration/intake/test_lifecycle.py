"""Intake follows each ticket through dispatch's and mediation's events (consumed from the real
broker): ``GET /tickets/{id}`` shows the status and history, Open311 says open or closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.intake import lifecycle, tracking
from services.intake.models import DISPATCHES, HISTORY, TICKETS, inbox_table
from shared.events import dispatch as d
from shared.events import mediation as m
from tests.integration.intake.support import IntakeEnv
from tests.support import wait_until

DUE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def open311_ticket(env: IntakeEnv) -> str:
    response = await env.client.post(
        "/open311/v2/requests.json",
        data={
            "service_code": "0102",
            "address_string": env.address(),
            "description": f"路灯坏了，夜里很黑 {env.unique()}",
            "phone": env.phone(),
        },
    )
    assert response.status_code == 201, response.text
    return response.json()[0]["service_request_id"]  # type: ignore[no-any-return]


async def status_of(env: IntakeEnv, ticket_id: str) -> dict[str, Any]:
    return (await env.client.get(f"/tickets/{ticket_id}")).json()  # type: ignore[no-any-return]


async def wait_status(env: IntakeEnv, ticket_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """Wait until the ticket has the status (and fields): topics are consumed independently, so
    mediation's events may be applied before or after dispatch's."""

    async def reached() -> bool:
        view = await status_of(env, ticket_id)
        return view["status"] == status and all(view[k] == v for k, v in fields.items())

    await wait_until(reached, timeout=20, what=f"{ticket_id} to be {status} {fields}")
    return await status_of(env, ticket_id)


async def open311_status(env: IntakeEnv, ticket_id: str) -> Any:
    return (await env.client.get(f"/open311/v2/requests/{ticket_id}.json")).json()[0]


async def test_assigned_signed_completed(env: IntakeEnv) -> None:
    ticket_id = await open311_ticket(env)
    dispatch_id = f"D-{ticket_id}-1"
    await env.publish(
        d.TicketAssigned(
            ticket_id=ticket_id,
            dispatch_id=dispatch_id,
            department_code="city-lighting",
            department_tier="district",
            category_code="0102",
            channel="open311-public-api",
            deadlines={"resolution": DUE},
        )
    )
    view = await wait_status(env, ticket_id, "dispatched")
    assert view["department_code"] == "city-lighting" and view["due_at"].startswith("2026-12-01")
    assert (await open311_status(env, ticket_id))["status"] == "open"

    await env.publish(
        d.DispatchSigned(
            ticket_id=ticket_id, dispatch_id=dispatch_id, department_code="city-lighting"
        ),
        d.ProgressNoted(
            ticket_id=ticket_id,
            dispatch_id=dispatch_id,
            department_code="city-lighting",
            note="已联系市民13912345678，明天更换灯泡",
        ),
    )
    view = await wait_status(env, ticket_id, "in_progress")
    await env.publish(
        d.DispatchCompleted(
            ticket_id=ticket_id,
            dispatch_id=dispatch_id,
            department_code="city-lighting",
            result="灯泡已更换",
        )
    )
    view = await wait_status(env, ticket_id, "completed")
    types = [h["type"] for h in view["history"]]
    assert types == [
        "intake.ticket.received",
        "dispatch.ticket.assigned",
        "dispatch.dispatch.signed",
        "dispatch.progress.noted",
        "dispatch.dispatch.completed",
    ]
    assert "13912345678" not in str(view) and "139****5678" in str(view)
    request = await open311_status(env, ticket_id)
    assert request["status"] == "closed" and request["agency_responsible"] == "city-lighting"
    assert request["status_notes"] == "已办结"  # a public phrase, never the department's note


async def test_transfer_mediation_and_agreement(env: IntakeEnv) -> None:
    ticket_id = await open311_ticket(env)
    await env.publish(
        d.TicketAssigned(
            ticket_id=ticket_id,
            dispatch_id=f"{ticket_id}-a",
            department_code="town-a",
            department_tier="town",
            category_code="0102",
            channel="open311-public-api",
        ),
        d.DispatchTransferred(
            ticket_id=ticket_id,
            dispatch_id=f"{ticket_id}-a",
            from_department="town-a",
            to_department="town-b",
            new_dispatch_id=f"{ticket_id}-b",
            reason="属地调整",
        ),
        m.CaseOpened(case_id=f"M-{ticket_id}", ticket_id=ticket_id),
    )
    view = await wait_status(env, ticket_id, "mediating", department_code="town-b")
    assert [h["status"] for h in view["history"]][-1] == "mediating"
    await env.publish(
        m.AgreementReached(case_id=f"M-{ticket_id}", ticket_id=ticket_id, kind="verbal"),
        d.DispatchCompleted(
            ticket_id=ticket_id,
            dispatch_id=f"{ticket_id}-b",
            department_code="town-b",
            result="调解达成协议",
            via="mediation",
        ),
    )
    await wait_status(env, ticket_id, "completed")


async def test_events_for_unknown_tickets_are_harmless(env: IntakeEnv) -> None:
    await env.publish(
        d.DispatchWithdrawn(ticket_id="19990101-0000001", dispatch_id="x", reason="重复件"),
        m.CaseOpened(case_id="walk-in-1"),
    )
    ticket_id = await open311_ticket(env)
    await env.publish(
        d.TicketAssigned(
            ticket_id=ticket_id,
            dispatch_id=f"{ticket_id}-w",
            department_code="town-a",
            department_tier="town",
            category_code="0102",
            channel="open311-public-api",
        ),
        d.DispatchWithdrawn(ticket_id=ticket_id, dispatch_id=f"{ticket_id}-w", reason="市民撤回"),
    )
    await wait_status(env, ticket_id, "closed")
    assert (await open311_status(env, ticket_id))["status"] == "closed"


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ([], "received"),
        ([("a", "offered")], "dispatched"),
        ([("a", "assigned"), ("b", "signed")], "in_progress"),
        ([("a", "return_requested")], "in_progress"),
        ([("a", "returned")], "dispatched"),
        ([("a", "signed"), ("b", "mediation_requested")], "mediating"),
        ([("a", "signed"), ("case:1", "mediating")], "mediating"),
        ([("a", "completed"), ("case:1", "mediating")], "completed"),
        ([("a", "completed"), ("b", "withdrawn")], "completed"),
        ([("a", "withdrawn"), ("b", "transferred")], "closed"),
        ([("case:1", "agreed")], "completed"),
    ],
)
def test_ticket_status_folds_its_dispatches(states: list[tuple[str, str]], status: str) -> None:
    assert lifecycle.ticket_status(states) == status
    assert lifecycle.open311_status(status) == (
        "closed" if status in ("completed", "closed") else "open"
    )


def test_an_approved_extension_moves_the_due_time_and_a_walk_in_is_no_step() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert lifecycle.step_for(m.CaseOpened(case_id="walk-in")) is None
    extension = d.ExtensionDecided(
        ticket_id="t",
        dispatch_id="x",
        department_code="dep",
        request_id=1,
        clock="resolution",
        approved=True,
        old_due_at=now,
        new_due_at=now + timedelta(days=2),
    )
    step = lifecycle.step_for(extension)
    assert step is not None and step.changes[0].due_at == now + timedelta(days=2)


async def test_the_ticket_view_shows_the_profile_dispatch_timed_it_on(env: IntakeEnv) -> None:
    ticket_id = await open311_ticket(env)
    assert (await status_of(env, ticket_id))["time_limit_profile"] == "standard"
    await env.publish(
        d.TicketAssigned(
            ticket_id=ticket_id,
            dispatch_id=f"D-{ticket_id}-1",
            department_code="city-lighting",
            department_tier="district",
            category_code="0102",
            channel="open311-public-api",
            time_limit_profile="urgent",
            deadlines={"resolution": DUE},
        )
    )
    view = await wait_status(env, ticket_id, "dispatched", time_limit_profile="urgent")
    assert view["department_code"] == "city-lighting"


def test_only_an_assignment_carries_a_profile() -> None:
    signed = d.DispatchSigned(ticket_id="T1", dispatch_id="D1", department_code="x")
    step = lifecycle.step_for(signed)
    assert step is not None and step.time_limit_profile is None


def story(ticket_id: str, start: datetime) -> list[Any]:
    """A ticket's life with a transfer, an extension, a mediation case and a completion."""
    at = iter(start + timedelta(minutes=k) for k in range(20))
    a, b = f"{ticket_id}-a", f"{ticket_id}-b"
    return [
        d.TicketAssigned(
            ticket_id=ticket_id,
            dispatch_id=a,
            department_code="town-a",
            department_tier="town",
            category_code="0102",
            channel="open311-public-api",
            deadlines={"resolution": DUE},
            time_limit_profile="urgent",
            occurred_at=next(at),
        ),
        d.DispatchSigned(
            ticket_id=ticket_id, dispatch_id=a, department_code="town-a", occurred_at=next(at)
        ),
        d.DispatchTransferred(
            ticket_id=ticket_id,
            dispatch_id=a,
            from_department="town-a",
            to_department="town-b",
            new_dispatch_id=b,
            reason="属地调整",
            occurred_at=next(at),
        ),
        d.TicketAssigned(
            ticket_id=ticket_id,
            dispatch_id=b,
            department_code="town-b",
            department_tier="town",
            category_code="0102",
            channel="open311-public-api",
            deadlines={"resolution": DUE + timedelta(days=1)},
            occurred_at=next(at),
        ),
        m.CaseOpened(case_id=f"M-{ticket_id}", ticket_id=ticket_id, occurred_at=next(at)),
        m.AgreementReached(
            case_id=f"M-{ticket_id}", ticket_id=ticket_id, kind="verbal", occurred_at=next(at)
        ),
        d.DispatchCompleted(
            ticket_id=ticket_id,
            dispatch_id=b,
            department_code="town-b",
            result="调解达成协议",
            via="mediation",
            occurred_at=next(at),
        ),
    ]


async def rows_of(env: IntakeEnv, ticket_id: str) -> Any:
    """The ticket's tracked rows with its id taken out, to compare two tickets' lives."""

    def plain(row: Any, *drop: str) -> tuple[Any, ...]:
        return tuple(
            str(v).replace(ticket_id, "T") for k, v in row._mapping.items() if k not in drop
        )

    async with env.runtime.engine.connect() as conn:
        dispatches = (
            await conn.execute(select(DISPATCHES).where(DISPATCHES.c.ticket_id == ticket_id))
        ).all()
        history = (
            await conn.execute(
                select(HISTORY).where(HISTORY.c.ticket_id == ticket_id).order_by(HISTORY.c.id)
            )
        ).all()
        ticket = (
            await conn.execute(
                select(
                    TICKETS.c.status,
                    TICKETS.c.status_at,
                    TICKETS.c.department_code,
                    TICKETS.c.due_at,
                    TICKETS.c.time_limit_profile,
                ).where(TICKETS.c.ticket_id == ticket_id)
            )
        ).one()
    return (
        sorted(plain(r) for r in dispatches),
        [plain(r, "id", "event_id") for r in history],
        plain(ticket),
    )


async def test_a_batch_tracks_tickets_as_one_event_at_a_time_would(env: IntakeEnv) -> None:
    """The consumer hands over whole fetches: one read of the tickets' dispatches, the changes
    worked in memory, one write per table — the same rows as applying each event alone."""
    start = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    alone, together, other, split, too = [await open311_ticket(env) for _ in range(5)]
    for event in story(alone, start):
        async with env.runtime.sessions() as session, session.begin():
            await tracking.apply_lifecycles(session=session, events=[event])
    # Two tickets' stories interleaved in one batch.
    pairs = zip(story(together, start), story(other, start), strict=True)
    mixed = [e for pair in pairs for e in pair]
    async with env.runtime.sessions() as session, session.begin():
        await tracking.apply_lifecycles(session=session, events=mixed)
    # And two more over two batches: the second moves several stored dispatches and tickets.
    pairs = zip(story(split, start), story(too, start), strict=True)
    mixed = [e for pair in pairs for e in pair]
    for batch in (mixed[:5], mixed[5:]):
        async with env.runtime.sessions() as session, session.begin():
            await tracking.apply_lifecycles(session=session, events=batch)
    expected = await rows_of(env, alone)
    assert expected[2][0] == "completed" and len(expected[1]) == 7
    for ticket_id in (together, other, split, too):
        assert await rows_of(env, ticket_id) == expected


async def test_redelivered_events_are_refused_by_their_history_steps(env: IntakeEnv) -> None:
    """The history's unique event id is the record of what was applied: a redelivered event,
    alone or beside new ones in a fetch, changes nothing, and no inbox row is written."""
    start = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    ticket_id, alone = await open311_ticket(env), await open311_ticket(env)
    # Dispatch's events only: one topic, delivered in order.
    events = [e for e in story(ticket_id, start) if e.event_type.startswith("dispatch.")]
    for event in [e for e in story(alone, start) if e.event_type.startswith("dispatch.")]:
        async with env.runtime.sessions() as session, session.begin():
            await tracking.apply_lifecycles(session=session, events=[event])
    await env.publish(*events[:3])
    await wait_until(
        lambda: _history_count(env, ticket_id, 3), timeout=20, what="three history steps"
    )
    # The three again alone, then again beside the rest: one fetch of old and new events.
    await env.publish(*events[:3])
    await env.publish(*events)
    await wait_until(
        lambda: _history_count(env, ticket_id, len(events)), timeout=20, what="every step"
    )
    await wait_status(env, ticket_id, "completed")
    assert await rows_of(env, ticket_id) == await rows_of(env, alone)
    ids = [str(e.event_id) for e in events]
    assert await env.count(inbox_table, inbox_table.c.event_id.in_(ids)) == 0


async def _history_count(env: IntakeEnv, ticket_id: str, n: int) -> bool:
    return await env.count(HISTORY, HISTORY.c.ticket_id == ticket_id) == n


async def test_apply_lifecycles_returns_what_it_applied(env: IntakeEnv) -> None:
    """Applied ids come back; a batch all applied before is refused whole, with no write."""
    start = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    ticket_id = await open311_ticket(env)
    events = story(ticket_id, start)[:2]
    async with env.runtime.sessions() as session, session.begin():
        done = await tracking.apply_lifecycles(session=session, events=events)
    assert done == [str(e.event_id) for e in events]
    before = await rows_of(env, ticket_id)
    async with env.runtime.sessions() as session, session.begin():
        assert await tracking.apply_lifecycles(session=session, events=events) == []
    assert await rows_of(env, ticket_id) == before
    with pytest.raises(tracking.Redelivered):
        async with env.runtime.sessions() as session, session.begin():
            later = story(ticket_id, start)[2:3]
            await tracking.apply_lifecycles(session=session, events=[events[0], *later])
