"""A hostile caller's probe across tenants, against services verifying tokens (AUTH_MODE=token):
another unit's dispatches, the operator's routes, writes by the read-only committee, forged,
expired and unsigned tokens, identity headers sent twice. Everything is refused, and nothing a
refused request touched has changed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.auth import ROLE_HEADER, gateway_headers, mint_token
from tests.integration.dispatch.support import DispatchEnv, running
from tests.support import (
    TEST_GATEWAY_SECRET,
    TEST_TOKEN_SECRET,
    Database,
    as_role,
    isolated_settings,
    lifespan,
)

pytestmark = pytest.mark.timeout(90)

OPERATOR = as_role("operator", subject="ops-1")


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "fengqiao", "aud": "fengqiao", "sub": "x", "exp": now + 600, **extra}


# Credentials that prove nothing, each claiming the operator's power.
FORGED = {
    "wrong key": mint_token(
        "an-attacker-secret-that-is-long-enough!!", role="operator", subject="mallory"
    ),
    "expired": mint_token(TEST_TOKEN_SECRET, role="operator", subject="ops-1", ttl_s=-300),
    "alg none": jwt.encode(_claims(role="operator"), None, algorithm="none"),
    "another audience": mint_token(
        TEST_TOKEN_SECRET, role="operator", subject="ops-1", audience="another-city-app"
    ),
}


@pytest.fixture
async def dispatch_env(broker: Any, database: Database) -> AsyncIterator[DispatchEnv]:
    async with running(database, broker.bootstrap, auth_mode="token") as env:
        env.bus = False  # tickets through dispatch's own handler: the probe is about the API
        yield env


async def _dispatch_of(env: DispatchEnv, grid: str) -> dict[str, Any]:
    ticket = await env.ticket(category="0204", grid=grid)
    response = await env.client.get(f"/tickets/{ticket}/dispatches", headers=OPERATOR)
    assert response.status_code == 200, response.text
    (only,) = response.json()
    assert only["department_code"] == f"GRID-WG-{grid}"
    return only  # type: ignore[no-any-return]


async def test_no_tenant_reaches_another_and_no_forgery_passes(dispatch_env: DispatchEnv) -> None:
    env = dispatch_env
    client = env.client
    grid_x, grid_y = env.place(), env.place()
    mine = await _dispatch_of(env, grid_x)
    theirs = await _dispatch_of(env, grid_y)
    did = mine["dispatch_id"]
    grid_worker_y = as_role("grid_worker", subject="gw-y", unit=f"GRID-WG-{grid_y}")
    department_b = as_role("department", subject="clerk-b", unit="DIST-ZF-330602")
    committee = as_role("committee", subject="supervision-office")
    hotline = as_role("hotline", subject="12345-platform")
    refused: list[tuple[str, int]] = []

    async def probe(
        what: str, method: str, path: str, headers: Any, expect: int, body: Any = None
    ) -> None:
        response = await client.request(method, path, headers=headers, json=body)
        assert response.status_code == expect, f"{what}: {response.status_code} {response.text}"
        refused.append((what, response.status_code))

    # Department B on A's dispatch, grid Y on X's: reads and writes alike.
    await probe("department B reads A's", "GET", f"/dispatches/{did}", department_b, 403)
    await probe(
        "department B signs A's", "POST", f"/dispatches/{did}/sign-for", department_b, 403, {}
    )
    await probe("grid Y reads X's", "GET", f"/dispatches/{did}", grid_worker_y, 403)
    await probe(
        "grid Y completes X's",
        "POST",
        f"/dispatches/{did}/complete",
        grid_worker_y,
        403,
        {"result": "done", "resolved": True},
    )
    await probe("grid Y lists X's ticket", "GET", f"/tickets/{mine['ticket_id']}/dispatches",
                grid_worker_y, 403)  # fmt: skip
    inbox = await client.get("/inbox", headers=grid_worker_y)
    assert inbox.status_code == 200, inbox.text
    listed = {d["dispatch_id"] for d in inbox.json()["items"]}
    assert theirs["dispatch_id"] in listed and did not in listed

    # The hotline on the operator's routes.
    await probe("hotline adds a department", "POST", "/departments", hotline, 403, {})
    await probe("hotline replaces the rules", "PUT", "/routing/rules", hotline, 403, {})
    await probe(
        "hotline replays the outbox",
        "POST",
        "/admin/outbox/replay?since=2000-01-01T00:00:00Z",
        hotline,
        403,
    )
    await probe("hotline reads dead letters", "GET", "/admin/dead-letters", hotline, 403)

    # The committee reads everything and writes nothing.
    await probe("committee reads", "GET", f"/dispatches/{did}", committee, 200)
    await probe("committee signs", "POST", f"/dispatches/{did}/sign-for", committee, 403, {})
    await probe("committee supervises", "POST", f"/dispatches/{did}/supervise", committee, 403,
                {"note": "催办"})  # fmt: skip
    await probe("committee deactivates", "POST", f"/departments/GRID-WG-{grid_x}/deactivate",
                committee, 403)  # fmt: skip

    # Credentials that prove nothing, and identities sent twice.
    for name, token in FORGED.items():
        bearer = {"authorization": f"Bearer {token}"}
        await probe(f"{name} token", "GET", f"/dispatches/{did}", bearer, 401)
        await probe(f"{name} token writes", "POST", f"/dispatches/{did}/sign-for", bearer, 401, {})
    await probe("unsigned headers", "GET", f"/dispatches/{did}", {"x-fengqiao-role": "operator"},
                401)  # fmt: skip
    twice = [
        ("authorization", OPERATOR["authorization"]),
        ("authorization", department_b["authorization"]),
    ]
    await probe("two tokens", "GET", f"/dispatches/{did}", twice, 400)
    two_roles = [*OPERATOR.items(), ("x-fengqiao-role", "operator"), ("x-fengqiao-role", "x")]
    await probe("two role headers", "GET", f"/dispatches/{did}", two_roles, 400)

    # Mediation's probes (mediator X on Y's case, another town's centre, the committee on
    # parties, writes by the hotline) run against a mediation app in token mode in
    # tests/integration/mediation/test_case_work.py.

    assert len(refused) >= 20
    # Nothing a refused request touched moved: both dispatches are as routing left them.
    for before in (mine, theirs):
        response = await client.get(f"/dispatches/{before['dispatch_id']}", headers=OPERATOR)
        assert response.status_code == 200
        after = response.json()
        assert (after["status"], after["version"]) == (before["status"], before["version"])
    assert await env.event_types(mine["ticket_id"]) == ["dispatch.ticket.assigned"]


TICKET = {"title": "停水", "content": "整栋楼停水一天"}


@contextlib.asynccontextmanager
async def intake_client(
    broker: Any, database: Database, auth_mode: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Intake in ``auth_mode``, called in-process."""
    settings = await isolated_settings(
        IntakeSettings,
        service="intake",
        database=database,
        bootstrap=broker.bootstrap,
        auth_mode=auth_mode,
    )
    app = create_intake(settings)
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://i") as c:
        yield c


async def test_intake_refuses_the_committee_writing_and_forged_posters(
    broker: Any, sqlite_db: Database
) -> None:
    async with intake_client(broker, sqlite_db, "token") as client:
        written = await client.post("/tickets", json=TICKET, headers=as_role("committee"))
        assert written.status_code == 403, written.text
        for name, token in FORGED.items():
            forged = await client.post(
                "/tickets", json=TICKET, headers={"authorization": f"Bearer {token}"}
            )
            assert forged.status_code == 401, f"{name}: {forged.text}"
        anonymous = await client.post("/tickets", json=TICKET)
        assert anonymous.status_code == 401
        listed = await client.get("/tickets", headers=as_role("hotline"))
        assert listed.status_code == 200 and listed.json()["items"] == []  # nothing got in
        accepted = await client.post("/tickets", json=TICKET, headers=as_role("hotline"))
        assert accepted.status_code == 201, accepted.text


async def test_behind_the_gateway_only_headers_it_signed_for_this_request_pass(
    broker: Any, sqlite_db: Database
) -> None:

    def signed(method: str, path: str, role: str) -> dict[str, str]:
        return gateway_headers(TEST_GATEWAY_SECRET, method=method, path=path, role=role)

    async with intake_client(broker, sqlite_db, "header") as client:
        unsigned = await client.post("/tickets", json=TICKET, headers={ROLE_HEADER: "hotline"})
        assert unsigned.status_code == 401, unsigned.text
        for headers in (
            signed("GET", "/tickets", "hotline"),  # signed for another method
            signed("POST", "/tickets/x/callbacks", "hotline"),  # and another path
            {**signed("POST", "/tickets", "hotline"), ROLE_HEADER: "operator"},  # altered
        ):
            refused = await client.post("/tickets", json=TICKET, headers=headers)
            assert refused.status_code == 401, refused.text
        accepted = await client.post(
            "/tickets", json=TICKET, headers=signed("POST", "/tickets", "hotline")
        )
        assert accepted.status_code == 201, accepted.text
        listed = await client.get("/tickets", headers=signed("GET", "/tickets", "hotline"))
        assert listed.status_code == 200
        assert [t["ticket_id"] for t in listed.json()["items"]] == [accepted.json()["ticket_id"]]
