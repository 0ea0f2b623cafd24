"""``POST /tickets`` answered below FastAPI's routing (``services/intake/fastpath.py``): the same
answers, refusals and metrics as the FastAPI route, which still serves what the fast path hands
on (here: a chunked body, which declares no length)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from services.intake.fastpath import TicketFastPath
from services.intake.models import TICKETS, TicketAccepted
from tests.integration.intake.support import IntakeEnv
from tests.integration.intake.support import ticket_body as ticket

COMMITTEE = {"X-Fengqiao-Role": "committee"}


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data[:10]
    yield data[10:]


async def post_both(
    env: IntakeEnv, body: Any, headers: dict[str, str] | None = None
) -> tuple[Any, Any]:
    """The same body posted with its length (the fast path) and chunked (the FastAPI route)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"content-type": "application/json", **(headers or {})}
    fast = await env.client.post("/tickets", content=data, headers=sent)
    routed = await env.client.post("/tickets", content=_chunks(data), headers=sent)
    return fast, routed


@pytest.mark.parametrize(
    "change",
    [
        {"title": None},  # missing: RequestValidationError's shape
        {"surprise": 1},  # extra field
        {"citizen_phone": "call me"},  # the draft's check: PayloadError's shape
        {"channel": "no-such-channel"},
        {"channel": "callback-12345-revisit"},
        {"longitude": 120.1},  # coordinates come in pairs
        {"citizen_id_number": "12345"},
        {"category_code": "9999"},
        {"received_at": "2999-01-01T00:00:00+08:00"},
    ],
)
async def test_a_refusal_is_the_routes_word_for_word(
    env: IntakeEnv, change: dict[str, Any]
) -> None:
    body = {k: v for k, v in {**ticket(env), **change}.items() if v is not None}
    fast, routed = await post_both(env, body)
    assert fast.status_code == routed.status_code == 422, (fast.text, routed.text)
    assert fast.json() == routed.json()
    assert fast.headers["content-type"] == routed.headers["content-type"]


async def test_bad_json_and_a_forbidden_role_are_refused_alike(env: IntakeEnv) -> None:
    fast, routed = await post_both(env, b'{"title": ')
    assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
    assert fast.status_code == 422

    fast, routed = await post_both(env, ticket(env), COMMITTEE)
    assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
    assert fast.status_code == 403


async def test_an_accepted_ticket_answers_alike_and_is_stored_once(env: IntakeEnv) -> None:
    body = ticket(env, enterprise_name="  枫桥五金厂 ", citizen_name="\u0007王先生")
    fast, again = await post_both(env, body)
    assert (fast.status_code, again.status_code) == (201, 200), fast.text
    assert fast.headers["content-type"] == "application/json"
    assert {**fast.json(), "created": False} == again.json()
    # The answer is written from the stored row, not by the model: the bytes are the model's.
    for answer in (fast, again):
        model = TicketAccepted.model_validate_json(answer.content)
        assert answer.content == model.model_dump_json().encode()
    assert await env.count(TICKETS, TICKETS.c.external_id == body["external_id"]) == 1
    stored = await env.ticket(fast.json()["ticket_id"])
    assert (stored.citizen_name, stored.is_enterprise) == ("王先生", True)


async def test_the_fast_path_answers_without_the_app(env: IntakeEnv) -> None:
    """A request it takes never reaches the FastAPI app; one it does not take reaches it as sent."""
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fast_path = TicketFastPath(app)

    async def call(headers: list[tuple[bytes, bytes]], data: bytes) -> list[Any]:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/tickets",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "query_string": b"",
            "app": env.app,
        }
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": data, "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        await fast_path(scope, receive, send)
        return sent

    data = orjson.dumps(ticket(env))
    length = (b"content-length", str(len(data)).encode())
    answered = await call([(b"content-type", b"application/json"), length], data)
    assert answered[0]["status"] == 201 and reached == []
    assert orjson.loads(answered[1]["body"])["status"] == "received"

    handed_on = await call([(b"content-type", b"text/plain"), length], data)
    assert handed_on[0]["status"] == 204 and reached == ["/tickets"]


async def test_the_fast_path_records_the_routes_latency(env: IntakeEnv) -> None:
    histogram = env.runtime.metrics.http_latency

    def observed(status: str) -> float:
        return histogram.labels("POST", "/tickets", status)._sum.get()  # type: ignore[no-any-return]

    def counted(status: str) -> float:
        child = histogram.labels("POST", "/tickets", status)
        return sum(bucket.get() for bucket in child._buckets)  # type: ignore[no-any-return]

    before = (counted("2xx"), counted("4xx"))
    await env.client.post("/tickets", json=ticket(env))
    await env.client.post("/tickets", json=ticket(env), headers=COMMITTEE)
    assert (counted("2xx"), counted("4xx")) == (before[0] + 1, before[1] + 1)
    assert observed("2xx") > 0


async def test_the_route_still_publishes_the_answers_schema(env: IntakeEnv) -> None:
    document = (await env.client.get("/openapi.json")).json()
    created = document["paths"]["/tickets"]["post"]["responses"]["201"]
    schema = created["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/TicketAccepted"}
    published = document["components"]["schemas"]["TicketAccepted"]
    assert set(published["properties"]) == set(TicketAccepted.model_fields)


async def test_accepted_tickets_are_counted_by_channel_and_outcome(env: IntakeEnv) -> None:
    metrics = env.ctx.metrics
    assert metrics is not None

    def counted(outcome: str) -> float:
        value = metrics.tickets.labels("hotline-12345-phone", outcome)._value.get()
        return float(value)

    before = counted("created"), counted("existing")
    body = ticket(env)
    fast, again = await post_both(env, body)
    assert (fast.status_code, again.status_code) == (201, 200)
    fresh = await env.client.post("/tickets", json=ticket(env))
    assert fresh.status_code == 201
    assert (counted("created"), counted("existing")) == (before[0] + 2, before[1] + 1)


async def test_the_fast_path_answers_a_repeated_external_id_as_the_route_does(
    env: IntakeEnv,
) -> None:
    """Both posts by the fast path: the second is the first ticket, ``created: false``, in the
    bytes the model dumps, and nothing new is stored."""
    body = ticket(env)
    first = await env.client.post("/tickets", json=body)
    again = await env.client.post("/tickets", json=body)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json() == {**first.json(), "created": False}
    for answer in (first, again):
        assert (
            answer.content
            == TicketAccepted.model_validate_json(answer.content).model_dump_json().encode()
        )
    assert await env.count(TICKETS, TICKETS.c.external_id == body["external_id"]) == 1
