"""Routing on the bus: every handling line from a real ``TicketReceived``, the dry-run's
explanation, the active rules, refused rule files, and org changes that are events."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from sqlalchemy import event as sa_event
from sqlalchemy import select

from bench.dispatch_inprocess import as_delivered
from services.dispatch import placement
from shared.bus import topic_name
from shared.events import DISPATCH_TOPIC, INTAKE_TOPIC, MEDIATION_TOPIC, Event, decode, encode
from shared.events.dispatch import GrabOffered, MediationRequested, TicketAssigned
from shared.events.intake import Location, TicketReceived
from shared.events.mediation import CaseOpened
from shared.inbox import _Failed
from tests.integration.dispatch.support import CENTRE, DispatchEnv
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


def _assigned(events: list[Any]) -> list[TicketAssigned]:
    return [e for e in events if isinstance(e, TicketAssigned)]


async def test_normal_line_goes_to_the_grid_worker_with_standard_clocks(env: DispatchEnv) -> None:
    grid = env.place()
    ticket = await env.ticket(category="0204", grid=grid)
    d = await env.one(ticket)
    assert (d["department_code"], d["handling_line"], d["status"]) == (
        f"GRID-WG-{grid}",
        "normal",
        "assigned",
    )
    assert (d["rule_id"], d["time_limit_profile"], d["mode"]) == (
        "default-lowest-tier",
        "standard",
        "assign",
    )
    detail = await env.detail(d["dispatch_id"])
    assert {c["clock"] for c in detail["clocks"]} == {"sign_for", "first_contact", "resolution"}
    (assigned,) = _assigned(await env.events(ticket))
    assert assigned.department_tier == "grid" and set(assigned.deadlines) == {
        "sign_for",
        "first_contact",
        "resolution",
    }


@pytest.mark.parametrize(
    ("facts", "line", "department", "rule", "profile"),
    [
        (
            {"category": "0204", "repeat_count": 2},
            "task_force",
            "DIST-ZB-{district}",
            "repeat-task-force",
            "standard",
        ),
        (
            {"category": "0204", "content": "物业拒不清运，我准备去法院起诉"},
            "judicial",
            "TOWN-SFS-{town}",
            "law-judicial",
            "standard",
        ),
        ({"category": "1101"}, "aid", "TOWN-SWB-{town}", "hardship-aid-category", "standard"),
        ({"category": "1301"}, "mediation", "VIL-TW-{village}", "disputes-mediation", "mediation"),
        ({"category": "1901"}, "supervised_pool", "CITY-12345", None, "standard"),
        ({"category": "0204", "is_enterprise": True}, "normal", "GRID-WG-{grid}", None, None),
        ({"category": "0204", "urgency": "urgent"}, "normal", "GRID-WG-{grid}", None, "urgent"),
    ],
    ids=["task-force", "judicial", "aid", "mediation", "supervised-pool", "enterprise", "urgent"],
)
async def test_every_handling_line(
    env: DispatchEnv,
    facts: dict[str, Any],
    line: str,
    department: str,
    rule: str | None,
    profile: str | None,
) -> None:
    grid = env.place()
    codes = {"grid": grid, "village": grid[:12], "town": grid[:9], "district": grid[:6]}
    ticket = await env.ticket(grid=grid, **facts)
    d = await env.one(ticket)
    assert d["handling_line"] == line
    assert d["department_code"] == department.format(**codes)
    if rule is not None:
        assert d["rule_id"] == rule
    if profile is not None:
        assert d["time_limit_profile"] == profile
    if facts.get("is_enterprise"):
        assert d["time_limit_profile"] == "enterprise_2115" and d["rule_id"] == "enterprise-2115"
    assert d["supervised"] is (line == "supervised_pool")
    assert d["focused"] is (line == "task_force")  # repeat appeals are 重点办 from the start
    events = await env.events(ticket)
    (assigned,) = _assigned(events)
    assert assigned.handling_line == line
    requested = [e for e in events if isinstance(e, MediationRequested)]
    assert len(requested) == (1 if line == "mediation" else 0)


async def test_a_whistle_channel_profile_does_not_time_a_handling_dispatch(
    env: DispatchEnv,
) -> None:
    grid = env.place()
    ticket = await env.ticket(
        category="0204", grid=grid, channel="grid-whistle", time_limit_profile="whistle"
    )
    d = await env.one(ticket)
    assert d["time_limit_profile"] == "standard"  # the whistle profile times summons only
    clocks = {c["clock"] for c in (await env.detail(d["dispatch_id"]))["clocks"]}
    assert clocks == {"sign_for", "first_contact", "resolution"}


async def test_grab_line_offers_the_ticket_to_every_capable_department(env: DispatchEnv) -> None:
    ticket = await env.ticket(category="0102", grid="339902001001002", title="路灯不亮")
    d = await env.one(ticket)
    assert (d["status"], d["department_code"], d["mode"]) == ("pending_grab", None, "grab")
    detail = await env.detail(d["dispatch_id"])
    assert detail["offered_to"] == ["DIST-ZF-339902", "CITY-ZF"]
    assert detail["clocks"] == []  # clocks start when somebody takes it
    (offered,) = [e for e in await env.events(ticket) if isinstance(e, GrabOffered)]
    assert offered.departments == ("DIST-ZF-339902", "CITY-ZF")


async def test_routing_events_reach_the_bus(env: DispatchEnv) -> None:
    grid = env.place()
    ticket = await env.ticket(category="1301", grid=grid)
    consumer = AIOKafkaConsumer(
        topic_name(env.settings, DISPATCH_TOPIC),
        bootstrap_servers=env.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen: list[str] = []
    try:
        async with asyncio.timeout(15):
            while {"dispatch.ticket.assigned", "dispatch.mediation.requested"} - set(seen):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        event = decode(r.value, r.headers, r.key)
                        if getattr(event, "ticket_id", None) == ticket:
                            seen.append(event.event_type)
    finally:
        await consumer.stop()
    assert seen[:2] == ["dispatch.ticket.assigned", "dispatch.mediation.requested"]


async def test_dry_run_explains_which_rule_fires_and_why(env: DispatchEnv) -> None:
    response = await env.client.post(
        "/routing/dry-run",
        json={
            "category": "1304",
            "area_code": "339921101201",
            "channel": "hotline-12345-phone",
            "text": "宅基地边界纠纷",
        },
    )
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["rule_id"] == "fengqiao-homestead"
    assert decision["line"] == "mediation" and decision["profile"] == "mediation"
    assert [d["code"] for d in decision["departments"]] == ["TOWN-TW-339921101"]
    outcomes = {t["rule_id"]: t for t in decision["explanation"]}
    assert outcomes["repeat-task-force"]["outcome"] == "not_matched"
    assert outcomes["repeat-task-force"]["reason"] == "repeat count 0 < 2"
    fired = outcomes["fengqiao-homestead"]
    assert fired["outcome"] == "fired"
    assert "area 339921101201 lies in 339921101" in fired["reason"]
    assert "fengqiao-homestead" in decision["summary"]
    assert decision["rules_version"] == "2025.11-r1"


async def test_dry_run_with_exclusions_and_a_candidate_file(env: DispatchEnv) -> None:
    base = {"category": "0204", "area_code": "339902001001002", "channel": "x"}
    excluded = await env.client.post(
        "/routing/dry-run", json={**base, "exclude": ["GRID-WG-339902001001002"]}
    )
    assert [d["code"] for d in excluded.json()["departments"]] == ["VIL-JW-339902001001"]
    candidate = """
version: candidate-1
rules:
  - id: everything-to-the-city
    priority: 1
    result: {assign: {mode: explicit, departments: [CITY-ZF]}}
"""
    tried = await env.client.post("/routing/dry-run", json={**base, "rules_text": candidate})
    assert tried.json()["rule_id"] == "everything-to-the-city"
    assert tried.json()["rules_version"] == "candidate-1"
    unknown = await env.client.post("/routing/dry-run", json={**base, "category": "9999"})
    assert unknown.status_code == 422 and "9999" in unknown.json()["detail"]


async def test_active_rules_are_shown_with_their_version(env: DispatchEnv) -> None:
    response = await env.client.get("/routing/rules", params={"text": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == "2025.11-r1" and len(body["digest"]) == 64
    assert [r["id"] for r in body["rules"]][:2] == ["urgent-safety", "repeat-task-force"]
    assert body["activated_by"] == "system:load" and "version:" in body["text"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: x\nrules: [", "does not parse at line 2"),
        (
            "version: bad-1\nrules:\n  - id: a\n    priority: 1\n"
            "    match: {categories: ['9999']}\n    result: {assign: {mode: lowest_capable}}\n",
            "rule 'a' field match.categories[0]: unknown category code '9999'",
        ),
        (
            "version: bad-2\nrules:\n  - id: b\n    priority: 1\n"
            "    result: {assign: {mode: explicit, departments: [CITY-NOPE]}}\n",
            "unknown department code 'CITY-NOPE'",
        ),
        (
            "version: bad-3\nrules:\n  - id: c\n    priority: 1\n    match: {areas: ['123']}\n"
            "    result: {assign: {mode: lowest_capable}, profile: nightly}\n",
            "(and 1 more)",
        ),
    ],
    ids=["does-not-parse", "unknown-category", "unknown-department", "several-problems"],
)
async def test_a_bad_rules_file_is_refused_as_a_whole(
    env: DispatchEnv, text: str, reason: str
) -> None:
    before = (await env.client.get("/routing/rules")).json()
    response = await env.client.put(
        "/routing/rules", content=text, headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("routing rules refused: ")
    assert reason in response.json()["detail"]
    assert response.json()["problems"]
    after = (await env.client.get("/routing/rules")).json()
    assert after["rule_set_id"] == before["rule_set_id"]


async def test_org_changes_are_validated_audited_and_emitted_as_events(env: DispatchEnv) -> None:
    unit = {
        "code": "CITY-LAMPS",
        "name_zh": "枫桥市路灯管理所",
        "name_en": "Fengqiao Street Lighting Office",
        "tier": "city",
        "jurisdiction": "339900",
        "responsibilities": ["0102"],
    }
    denied = await env.client.post("/departments", json=unit, headers=CENTRE)
    assert denied.status_code == 403  # only operators configure the organisation
    created = await env.client.post("/departments", json=unit)
    assert created.status_code == 201, created.text
    assert (await env.client.post("/departments", json=unit)).status_code == 409
    wrong_tier = await env.client.post(
        "/departments", json=unit | {"code": "TOWN-X", "tier": "town", "jurisdiction": "339902"}
    )
    assert wrong_tier.status_code == 422
    assert "339902 is a district, not a town" in wrong_tier.json()["detail"]
    unknown = await env.client.post("/departments", json=unit | {"responsibilities": ["9999"]})
    assert unknown.status_code == 422 and "9999" in unknown.json()["detail"]
    # Routing sees the new unit at once: city-wide street lighting now has two capable units.
    dry = await env.client.post("/routing/dry-run", json={"category": "0102", "channel": "x"})
    assert [d["code"] for d in dry.json()["departments"]] == ["CITY-ZF", "CITY-LAMPS"]
    renamed = await env.client.patch("/departments/CITY-LAMPS", json={"name_en": "Lamps Office"})
    assert renamed.status_code == 200 and renamed.json()["revision"] == 2
    gone = await env.client.post("/departments/CITY-LAMPS/deactivate")
    assert gone.status_code == 200 and gone.json()["active"] is False
    dry = await env.client.post("/routing/dry-run", json={"category": "0102", "channel": "x"})
    assert [d["code"] for d in dry.json()["departments"]] == ["CITY-ZF"]
    history = (await env.client.get("/departments/CITY-LAMPS/history")).json()
    assert [h["change"] for h in history] == ["created", "updated", "deactivated"]
    assert history[1]["before"]["name_en"] == "Fengqiao Street Lighting Office"
    changes = [e for e in await env.events("CITY-LAMPS")]
    assert [(e.event_type, e.change) for e in changes] == [  # type: ignore[attr-defined]
        ("dispatch.department.changed", "created"),
        ("dispatch.department.changed", "updated"),
        ("dispatch.department.changed", "deactivated"),
    ]


async def test_a_department_holding_open_dispatches_cannot_be_deactivated(
    env: DispatchEnv,
) -> None:
    grid = env.place()
    await env.ticket(category="0204", grid=grid)
    response = await env.client.post(f"/departments/GRID-WG-{grid}/deactivate")
    assert response.status_code == 409
    assert "holds 1 open dispatch(es)" in response.json()["detail"]


async def test_a_change_that_breaks_the_active_rules_is_refused_naming_the_rule(
    env: DispatchEnv,
) -> None:
    from services.dispatch.data import DATA_PACKAGE
    from shared.datafiles import packaged_text

    parks = {
        "code": "CITY-PARKS",
        "name_zh": "枫桥市园林绿化管理中心",
        "name_en": "Fengqiao Parks Centre",
        "tier": "city",
        "jurisdiction": "339900",
        "responsibilities": ["1602"],
    }
    assert (await env.client.post("/departments", json=parks)).status_code == 201
    rules = packaged_text(DATA_PACKAGE, "rules.yaml").replace(
        'version: "2025.11-r1"', 'version: "parks-1"'
    )
    rules += """
  - id: parks
    priority: 90
    match: {keywords: [公园]}
    result: {assign: {mode: explicit, departments: [CITY-PARKS]}}
"""
    yaml = {"content-type": "application/yaml"}
    try:
        put = await env.client.put("/routing/rules", content=rules, headers=yaml)
        assert put.status_code == 201, put.text
        assert put.json()["version"] == "parks-1"
        again = await env.client.put("/routing/rules", content=rules, headers=yaml)
        assert again.status_code == 200  # the same file: nothing new
        reused = await env.client.put(
            "/routing/rules", content=rules.replace("公园", "绿地"), headers=yaml
        )
        assert reused.status_code == 422 and "already activated" in reused.json()["detail"]
        refused = await env.client.post("/departments/CITY-PARKS/deactivate")
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert detail.startswith(
            "the change would break the active routing rules (version parks-1)"
        )
        assert "rule 'parks' field result.assign.departments[0]" in detail
        assert (await env.client.get("/departments/CITY-PARKS")).json()["active"] is True
    finally:
        restore = await env.client.put(
            "/routing/rules",
            content=packaged_text(DATA_PACKAGE, "rules.yaml"),
            headers=yaml,
        )
        assert restore.status_code == 201
    assert (await env.client.post("/departments/CITY-PARKS/deactivate")).status_code == 200


async def test_listings_page_and_refuse_offsets_no_listing_reaches(env: DispatchEnv) -> None:
    grids = await env.client.get("/areas", params={"tier": "grid", "limit": 5, "offset": 3})
    assert grids.status_code == 200
    assert len(grids.json()) == 5 and {a["tier"] for a in grids.json()} == {"grid"}
    page = await env.client.get("/areas", params={"tier": "grid", "limit": 8})
    assert [a["code"] for a in page.json()[3:]] == [a["code"] for a in grids.json()]
    for path in ("/areas", "/departments"):
        huge = await env.client.get(path, params={"offset": 28333479921357651181568})
        assert huge.status_code == 422, huge.text
        assert huge.json()["errors"][0]["field"] == "query.offset"


async def test_department_search_takes_percent_and_underscore_literally(env: DispatchEnv) -> None:
    async def codes(q: str) -> list[str]:
        response = await env.client.get("/departments", params={"q": q})
        assert response.status_code == 200, response.text
        return [d["code"] for d in response.json()["items"]]

    assert "CITY-ZF" in await codes("CITY-Z")
    assert await codes("%") == [] and await codes("_") == []  # no code or name holds them


def _delivered(
    env: DispatchEnv, events: Sequence[Event], first: int, *, partition: int = 0, topic: str = ""
) -> list[ConsumerRecord[bytes, bytes]]:
    """Events as the consumer gets them from the broker (from the intake topic by default),
    at consecutive offsets from ``first``."""
    name = topic_name(env.settings, topic or INTAKE_TOPIC)
    return [
        as_delivered(encode(e), topic=name, partition=partition, offset=offset)
        for offset, e in enumerate(events, start=first)
    ]


def _garbage_tickets(env: DispatchEnv, prefix: str, count: int) -> list[TicketReceived]:
    """``count`` received tickets about uncollected rubbish in a village of their own."""
    grid = env.place()
    return [
        TicketReceived(
            ticket_id=f"{prefix}{k:02d}-{uuid.uuid4().hex[:8]}",
            channel="hotline-12345-phone",
            received_at=env.clock.now(),
            title="小区垃圾无人清运",
            content="楼下垃圾桶满了三天没人清运",
            category_code="0204",
            location=Location(grid_code=grid),
        )
        for k in range(count)
    ]


async def test_a_fetched_batch_routes_each_ticket_once(env: DispatchEnv) -> None:
    """The consumer hands over whole fetches: a ticket already routed, or delivered twice
    under two event ids in one batch, is still placed once, with its clocks and its event."""
    tickets = _garbage_tickets(env, "TB", 12)
    again = tickets[7].model_copy(update={"event_id": uuid.uuid4()})
    async with env.runtime.sessions() as session, session.begin():
        first = await placement.route_tickets(session=session, ctx=env.ctx, tickets=tickets[:4])
    async with env.runtime.sessions() as session, session.begin():
        rest = await placement.route_tickets(
            session=session, ctx=env.ctx, tickets=[*tickets, again]
        )
    env.runtime.notify()
    assert [d.ticket_id for d in first] == [t.ticket_id for t in tickets[:4]]
    assert [d.ticket_id for d in rest] == [t.ticket_id for t in tickets[4:]]
    for t in tickets:
        d = await env.one(t.ticket_id)  # exactly one dispatch
        detail = await env.detail(d["dispatch_id"])
        assert {c["clock"] for c in detail["clocks"]} == {"sign_for", "first_contact", "resolution"}
        assert [type(e) for e in await env.events(t.ticket_id)] == [TicketAssigned]


_RECORDING: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "recording", default=None
)


def _record_driver_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    """The statements sent on asyncpg connections themselves (BEGIN and COMMIT included, which
    SQLAlchemy's events do not show), by the task that sets ``_RECORDING`` only."""
    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        real = getattr(asyncpg.Connection, name)

        def recorded(real: Any) -> Any:
            async def call(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
                into = _RECORDING.get()
                if into is not None:
                    into.append(query)
                return await real(self, query, *args, **kwargs)

            return call

        monkeypatch.setattr(asyncpg.Connection, name, recorded(real))


async def test_received_tickets_are_deduplicated_by_routing_not_by_an_inbox_look_up(
    env: DispatchEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch of received tickets goes to routing without the inbox look-up: routing refuses a
    ticket already routed, whatever the event id, and the consumer counts the refusals as
    duplicates; no event gets an inbox row (the ticket's row is the record). On PostgreSQL the
    fetch opens no transaction: its one read and its one write are all its round trips."""
    tickets = _garbage_tickets(env, "TD", 3)
    again = tickets[1].model_copy(update={"event_id": uuid.uuid4()})
    consumer = env.runtime.consumer
    duplicates = consumer._metrics.events_duplicate.labels(TicketReceived.event_type)
    before = duplicates._value.get()
    statements: list[str] = []
    on_driver: list[str] = []
    _record_driver_statements(monkeypatch)
    _RECORDING.set(on_driver)

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = env.runtime.engine.sync_engine
    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        await consumer._apply_together(consumer._plan(_delivered(env, tickets[:2], 10_000)))
        statements += on_driver
        on_driver.clear()
        # The same event again, the same ticket under another event id, and a new ticket.
        await consumer._apply_together(
            consumer._plan(_delivered(env, [tickets[0], again, tickets[2]], 10_002))
        )
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
        _RECORDING.set(None)
    statements += on_driver
    assert not [q for q in statements if "inbox" in q]
    if env.settings.database_url.startswith("postgresql"):
        # The second fetch (the organisation as cached; the first read it again, as a new
        # place moved its revision, and so opened the session's transaction) sends a read and
        # a write, and no BEGIN or COMMIT.
        assert len(on_driver) == 2, on_driver
        assert "FROM tickets" in on_driver[0] and on_driver[1].startswith("WITH"), on_driver
    # The tickets already routed are read with the revisions, one statement a fetch, its text
    # the same whatever the fetch holds (on SQLite too).
    routed = [q for q in statements if "FROM tickets" in q]
    assert len(routed) == 2 and all("dispatch_meta" in q for q in routed), routed
    assert routed[0] == routed[1]
    assert duplicates._value.get() - before == 2
    for t in tickets:
        await env.one(t.ticket_id)  # exactly one dispatch each
    assert await _inbox_rows(env, [*tickets, again]) == set()


async def _inbox_rows(env: DispatchEnv, events: list[TicketReceived]) -> set[str]:
    """Which of these events dispatch's inbox holds."""
    t = env.runtime.inbox_table
    async with env.runtime.sessions() as session:
        rows = await session.execute(
            select(t.c.event_id).where(t.c.event_id.in_([str(e.event_id) for e in events]))
        )
        return set(rows.scalars())


async def _assigned_once(env: DispatchEnv, tickets: list[TicketReceived]) -> None:
    """Each ticket has exactly one dispatch, and exactly one ``TicketAssigned`` in the outbox."""
    for t in tickets:
        await env.one(t.ticket_id)
        assert [type(e) for e in await env.events(t.ticket_id)] == [TicketAssigned]


async def test_a_redelivered_fetch_of_received_tickets_assigns_each_once_without_inbox_rows(
    env: DispatchEnv,
) -> None:
    """A received ticket gets no inbox row: its own row, keyed by its id, is the record that it
    was routed. A fetch delivered again — together, one by one (a fetch of one record, or a
    batch that failed), or from the broker — still assigns each ticket once and loses none."""
    tickets = _garbage_tickets(env, "TR", 4)
    consumer = env.runtime.consumer
    records = _delivered(env, tickets, 20_000)
    await consumer._apply_together(consumer._plan(records[:3]))
    await consumer._apply_together(consumer._plan(records))  # three again and a new one
    assert await consumer._apply_one_by_one(records) == len(records)  # all again, one by one
    env.runtime.notify()
    await _assigned_once(env, tickets)
    assert await _inbox_rows(env, tickets) == set()
    # From the broker (the consumer running), after the rows above are committed.
    metrics = consumer._metrics
    kind = TicketReceived.event_type

    def taken() -> float:  # applied (one by one) or refused as duplicates (together)
        consumed = metrics.events_consumed.labels(kind)._value.get()
        return float(consumed + metrics.events_duplicate.labels(kind)._value.get())

    before = taken()
    for event in tickets[:2]:
        await env.publish(INTAKE_TOPIC, event)

    async def delivered() -> bool:
        return taken() >= before + 2

    await wait_until(delivered, timeout=20, what="the redelivered tickets taken")
    await _assigned_once(env, tickets)
    assert await _inbox_rows(env, tickets) == set()


async def test_a_ticket_routed_by_two_fetches_at_once_is_assigned_once(env: DispatchEnv) -> None:
    """Two transactions routing the same received ticket at once (a partition's fetch redone
    by a consumer that just took it over while the one before still writes): neither sees the
    other's rows, so the ticket's key refuses the second; redone, routing refuses it."""
    tickets = _garbage_tickets(env, "TX", 3)
    consumer = env.runtime.consumer
    records = _delivered(env, tickets, 30_000, partition=1)
    outcomes = await asyncio.gather(
        consumer._apply_together(consumer._plan(records)),
        consumer._apply_together(consumer._plan(records)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) <= 1, failed
    assert all(isinstance(o, Exception) for o in failed), failed
    if failed:
        assert await consumer._apply_one_by_one(records) == len(records)  # the redo
    env.runtime.notify()
    await _assigned_once(env, tickets)


async def test_a_ticket_that_cannot_be_routed_fails_alone_in_its_batch(env: DispatchEnv) -> None:
    """A category no rule or department knows makes routing raise: the batch it came in is
    applied again one by one, the others are routed and that one is dead-lettered."""
    grid = env.place()

    def received(k: int, category: str) -> TicketReceived:
        return TicketReceived(
            ticket_id=f"TP{k:02d}-{uuid.uuid4().hex[:8]}",
            channel="hotline-12345-phone",
            received_at=env.clock.now(),
            title="小区垃圾无人清运",
            content="楼下垃圾桶满了三天没人清运",
            category_code=category,
            location=Location(grid_code=grid),
        )

    good = [received(k, "0204") for k in range(6)]
    poison = received(99, "9999")
    for event in [*good[:3], poison, *good[3:]]:
        await env.publish(INTAKE_TOPIC, event)
    for event in good:
        await env.handled(event)
    t = env.runtime.inbox_table

    async def dead_lettered() -> bool:
        async with env.runtime.engine.connect() as conn:
            status = await conn.execute(
                select(t.c.status).where(t.c.event_id == str(poison.event_id))
            )
            return status.scalar_one_or_none() == "dead_lettered"

    await wait_until(dead_lettered, timeout=30, what="the unroutable ticket dead-lettered")
    response = await env.client.get(f"/tickets/{poison.ticket_id}/dispatches")
    assert response.status_code == 404, response.text
    for event in good:
        assert (await env.one(event.ticket_id))["status"] == "assigned"


async def test_a_fetch_that_fails_after_routing_is_redone_without_assigning_twice(
    env: DispatchEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a fetch's routing commits with its one write (no transaction is open
    around it): if a later event of the same fetch fails, the fetch is redone one by one,
    routing refuses the tickets it holds already, and the failing event alone is retried."""
    tickets = _garbage_tickets(env, "TF", 3)
    consumer = env.runtime.consumer
    case = CaseOpened(case_id=f"C-{uuid.uuid4().hex[:8]}", ticket_id=tickets[0].ticket_id)
    kind = CaseOpened.cloudevent_type()
    calls: list[str] = []

    async def refused(event: CaseOpened, *, session: Any) -> None:
        calls.append(event.case_id)
        raise RuntimeError("the case cannot be recorded now")

    monkeypatch.setitem(consumer._handlers, kind, (consumer._handlers[kind][0], refused))
    records = _delivered(env, tickets, 40_000) + _delivered(
        env, [case], 40_000, topic=MEDIATION_TOPIC
    )
    with pytest.raises(RuntimeError, match="cannot be recorded"):
        await consumer._apply_together(consumer._plan(records))
    with pytest.raises(_Failed):
        await consumer._apply_one_by_one(records)  # the redo: stops at the failing event
    assert calls == [case.case_id, case.case_id]
    env.runtime.notify()
    await _assigned_once(env, tickets)
