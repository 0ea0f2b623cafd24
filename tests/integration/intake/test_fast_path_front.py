"""``POST /tickets`` taken in front of the whole FastAPI app (``fastpath.TicketApp``): a request
the fast path takes never enters the app's middleware stack, one it hands on goes through it as
sent, and a fault no handler answers gets the 500 the stack's server-error middleware gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.responses import PlainTextResponse

from services.intake import service
from tests.integration.intake.support import IntakeEnv
from tests.integration.intake.support import ticket_body as ticket


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data[:10]
    yield data[10:]


@pytest.fixture
async def entered(env: IntakeEnv, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that entered the app's middleware stack."""
    assert (await env.client.get("/healthz")).status_code == 200  # the stack is built
    stack = env.app.middleware_stack
    assert stack is not None
    paths: list[str] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await stack(scope, receive, send)

    monkeypatch.setattr(env.app, "middleware_stack", spy)
    return paths


async def test_a_taken_post_does_not_enter_the_apps_stack(
    env: IntakeEnv, entered: list[str]
) -> None:
    data = orjson.dumps(ticket(env))
    headers = {"content-type": "application/json"}
    taken = await env.client.post("/tickets", content=data, headers=headers)
    assert taken.status_code == 201, taken.text
    assert entered == []
    refused = await env.client.post("/tickets", content=b'{"title": ', headers=headers)
    assert refused.status_code == 422 and entered == []
    # Chunked (no length): handed on, and answered by the route through the whole stack.
    routed = await env.client.post("/tickets", content=_chunks(data), headers=headers)
    assert routed.status_code == 200 and routed.json()["ticket_id"] == taken.json()["ticket_id"]
    assert entered == ["/tickets"]
    assert (await env.client.get("/healthz")).status_code == 200
    assert entered == ["/tickets", "/healthz"]


async def test_a_fault_no_handler_answers_is_the_stacks_500_and_is_raised(
    env: IntakeEnv, entered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**_: Any) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(service, "accept_ticket_json", broken)
    with pytest.raises(RuntimeError, match="broken"):
        await env.client.post("/tickets", json=ticket(env))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app, raise_app_exceptions=False),
        base_url="http://intake",
    ) as client:
        answer = await client.post("/tickets", json=ticket(env))
        assert (answer.status_code, answer.text) == (500, "Internal Server Error")
        assert answer.headers["content-type"].startswith("text/plain")

        async def own_500(_request: Any, exc: Exception) -> PlainTextResponse:
            return PlainTextResponse(f"ours: {exc}", status_code=500)

        monkeypatch.setitem(env.app.exception_handlers, 500, own_500)
        answer = await client.post("/tickets", json=ticket(env))
        assert (answer.status_code, answer.text) == (500, "ours: broken")
    assert entered == []
