"""Per-client rate limits on intake's public routes: a client over its limit gets 429 with
Retry-After; other clients (another subject, another address) are not slowed by it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.integration.intake.support import running, ticket_body
from tests.support import Database


async def test_a_client_over_its_limit_gets_429_with_retry_after_and_others_do_not(
    broker: Any, tmp_path: Path
) -> None:
    database = Database("sqlite", str(tmp_path))
    async with running(database, broker.bootstrap, public_rate_limit="3/minute") as env:
        hotline = {"x-fengqiao-role": "hotline", "x-fengqiao-subject": "platform-a"}
        answers = [
            await env.client.post("/tickets", json=ticket_body(env), headers=hotline)
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [201, 201, 201, 429], answers[-1].text
        limited = answers[-1]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "3 per 1 minute" in limited.json()["detail"]
        # The limit is the client's, across the public routes
        native = await env.client.post(
            "/channels/grid-worker-app/tickets", json={"eventTitle": "x"}, headers=hotline
        )
        assert native.status_code == 429, native.text

        # Another authenticated subject has a budget of its own
        other = {"x-fengqiao-role": "hotline", "x-fengqiao-subject": "platform-b"}
        answer = await env.client.post("/tickets", json=ticket_body(env), headers=other)
        assert answer.status_code == 201, answer.text

        # Without a subject the client is its address: Open311's public routes too
        for host, expected in (("198.51.100.7", [200, 200, 200, 429]), ("198.51.100.8", [200])):
            transport = httpx.ASGITransport(app=env.app, client=(host, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
                codes = [
                    (await client.get("/open311/v2/services.json")).status_code for _ in expected
                ]
            assert codes == expected, (host, codes)


async def test_reads_and_operations_are_not_limited(broker: Any, tmp_path: Path) -> None:
    database = Database("sqlite", str(tmp_path))
    async with running(database, broker.bootstrap, public_rate_limit="1/minute") as env:
        for path in ("/tickets", "/channels", "/healthz", "/tickets", "/channels", "/healthz"):
            assert (await env.client.get(path)).status_code == 200, path
