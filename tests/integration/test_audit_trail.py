"""Every state change records who did it: the four services verifying tokens over the real
broker, a ticket posted by the hotline, routed by dispatch's consumer, signed for by the grid
worker, and ``fengqiao audit`` printing the one merged timeline an operator reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from fengqiao.cli import app as cli
from fengqiao.registry import SERVICES
from shared import geo
from tests.support import (
    Database,
    RunningService,
    as_role,
    isolated_settings,
    make_settings,
    serve,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

OPERATOR = as_role("operator", subject="ops-audit")


@contextlib.asynccontextmanager
async def suite(database: Database, bootstrap: str) -> AsyncIterator[dict[str, RunningService]]:
    """The four services on one topic prefix, each under uvicorn on a port of its own."""
    first, *rest = SERVICES.values()
    settings = {
        first.name: await isolated_settings(
            first.settings,
            service=first.name,
            database=database,
            bootstrap=bootstrap,
            auth_mode="token",
        )
    }
    prefix = settings[first.name].kafka_topic_prefix
    for entry in rest:
        settings[entry.name] = await make_settings(
            entry.settings,
            service=entry.name,
            database=database,
            bootstrap=bootstrap,
            prefix=prefix,
            auth_mode="token",
        )
    async with contextlib.AsyncExitStack() as stack:
        running = {}
        for name, entry in SERVICES.items():
            module, _, factory = entry.app.partition(":")
            create_app = getattr(__import__(module, fromlist=[factory]), factory)
            running[name] = await stack.enter_async_context(serve(name, create_app(settings[name])))
        yield running


def _a_grid() -> str:
    return next(a.code for a in geo.city().by_code.values() if a.tier is geo.Tier.GRID)


async def test_one_tickets_trail_names_every_actor_across_the_services(
    broker: Any, database: Database
) -> None:
    grid = _a_grid()
    async with suite(database, broker.bootstrap) as services:
        intake, dispatch = services["intake"].client(), services["dispatch"].client()
        async with intake, dispatch:
            posted = await intake.post(
                "/tickets",
                json={
                    "title": "小区垃圾无人清运",
                    "content": "楼下垃圾桶满了三天没人清运",
                    "category_code": "0204",
                    "grid_code": grid,
                },
                headers=as_role("hotline", subject="agent-0451"),
            )
            assert posted.status_code == 201, posted.text
            ticket = posted.json()["ticket_id"]
            found: list[dict[str, Any]] = []

            async def routed() -> bool:
                response = await dispatch.get(f"/tickets/{ticket}/dispatches", headers=OPERATOR)
                found[:] = response.json() if response.status_code == 200 else []
                return bool(found)

            await wait_until(routed, timeout=30, what="dispatch to route the posted ticket")
            (d,) = found
            unit = d["department_code"]
            signed = await dispatch.post(
                f"/dispatches/{d['dispatch_id']}/sign-for",
                json={"note": "收到"},
                headers=as_role("grid_worker", subject="gw-7", unit=unit),
            )
            assert signed.status_code == 200, signed.text
            refused = await dispatch.get(
                "/admin/audit", params={"ticket_id": ticket}, headers=as_role("hotline")
            )
            assert refused.status_code == 403  # operators read the trail
            forbidden_write = await dispatch.post(
                f"/dispatches/{d['dispatch_id']}/progress",
                json={"note": "x"},
                headers=as_role("committee"),
            )
            assert forbidden_write.status_code == 403  # a refused request leaves no audit row

        urls = [f"--url={name}={s.url}" for name, s in services.items()]
        token = OPERATOR["authorization"].removeprefix("Bearer ")
        # The command runs its own event loop: in a thread, while the services serve in this one.
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["audit", ticket, *urls, "--token", token, "--json"]
        )
    assert result.exit_code == 0, result.output
    trail = orjson.loads(result.stdout)
    actors = [
        (r["service"], r["event_type"], r["actor_role"], r["actor_subject"], r["actor_unit"])
        for r in trail
    ]
    assert actors == [
        ("intake", "intake.ticket.received", "hotline", "agent-0451", None),
        ("dispatch", "dispatch.ticket.assigned", "system", "system", None),
        ("dispatch", "dispatch.dispatch.signed", "grid_worker", "gw-7", unit),
    ]
    assert [r["occurred_at"] for r in trail] == sorted(r["occurred_at"] for r in trail)
    assert len({r["event_id"] for r in trail}) == len(trail)


async def test_the_audit_command_names_a_service_it_cannot_reach() -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["audit", "T-1", "--base-port", "1", "--url", "intake=http://127.0.0.1:1"],
    )
    assert result.exit_code == 1
    for name in SERVICES:
        assert f"{name}: unreachable" in result.output
