"""``POST /tickets`` below FastAPI's routing: the route that takes most of intake's traffic.

A pure ASGI layer in front of the app's middlewares. It takes the requests it can answer exactly
as the FastAPI route would — ``POST /tickets`` declaring a JSON body and its length within the
route's limit — and hands every other request, untouched, to the app. On the ones it takes it
reads the headers once, checks the caller's role and rate limit with the route's own functions
(``api.admit``), validates the body into the draft (``api.draft_from``), accepts the ticket
through the same service, and writes the answer from the ticket's stored row
(``service.accept_ticket_json``: the bytes the route's ``TicketAccepted`` dumps, without the
model). A refusal is answered by the app's own exception handlers, so every status and error
body is the route's; the latency histogram gets the route's labels, as the metrics middleware
would record them.

The FastAPI route stays declared: it publishes the operation in the OpenAPI document and serves
what this layer hands on (a body of another type, no length, a length over the limit).

``TicketApp`` puts this layer in front of FastAPI itself: the app's own outer layers (FastAPI's
telemetry check, Starlette's entry, the server-error, exception-telemetry and body-limit
middlewares) did nothing for a request it takes but cost a call each, and the telemetry check
read the environment three times a request. It is exact because the app declares FastAPI's
native OpenTelemetry off (the suite exports Prometheus metrics and installs no OpenTelemetry
SDK, so no span was ever recorded) and sets no ``root_path`` or ``max_body_size`` (else every
request goes through FastAPI); a fault no handler answers is answered by Starlette's
``ServerErrorMiddleware`` with the app's error handler, as the app's stack answers it.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.intake import api, service
from services.intake.bodies import JSON, BodyTooLarge
from services.intake.context import IntakeContext
from services.intake.models import TicketIn
from shared.fastjson import validate_json

PATH = "/tickets"
_JSON_SUFFIX = "+json"


def _takes_media_type(value: bytes) -> bool:
    """``bodies.require_media_type`` for JSON, on the raw header value."""
    declared = value.decode("latin-1").split(";", 1)[0].strip().lower()
    return declared == JSON or declared.endswith(_JSON_SUFFIX)


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    """The app's handler for ``exc`` (its class or the nearest base registered), or None."""
    handlers = app.exception_handlers
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None


def _error_handler(app: FastAPI) -> Any:
    """The handler FastAPI gives its ``ServerErrorMiddleware``: the one for 500 or
    ``Exception``, the later registered if both are, else None."""
    handler = None
    for key, value in app.exception_handlers.items():
        if key in (500, Exception):
            handler = value
    return handler


async def _server_error(
    app: FastAPI, scope: Scope, receive: Receive, send: Send, exc: Exception
) -> None:
    """Answer ``exc`` as the app's ``ServerErrorMiddleware`` would (its own code: the app's 500
    handler, or the debug page, or "Internal Server Error") and raise it again."""

    async def fault(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise exc

    await ServerErrorMiddleware(fault, handler=_error_handler(app), debug=app.debug)(
        scope, receive, send
    )


async def _read(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class TicketFastPath:
    """Answers ``POST /tickets`` with a JSON body itself; passes everything else to ``app``.

    With ``front``, it stands in front of the app's server-error middleware, and answers a fault
    no handler takes as that middleware would (see ``TicketApp``)."""

    def __init__(self, app: ASGIApp, *, front: bool = False) -> None:
        self.app = app
        self._front = front
        self._metrics: Any = None  # the registry the children below belong to
        self._latency: dict[int, Any] = {}  # status class → the histogram's child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        fastapi_app: FastAPI = scope["app"]
        runtime = getattr(fastapi_app.state, "runtime", None)
        if runtime is None:  # before the lifespan has run: the app answers as it always has
            await self.app(scope, receive, send)
            return
        ctx: IntakeContext = runtime.context
        limit = min(ctx.settings.ticket_max_bytes, runtime.settings.max_body_bytes)
        content_type = length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is not None:
                    content_type = b""  # sent twice: left to the app
                    break
                content_type = value
            elif name == b"content-length":
                length = value
        if (
            not content_type
            or not _takes_media_type(content_type)
            or length is None
            or not length.isdigit()
            or int(length) > limit
        ):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started: list[bool] = []
        try:
            status = await self._answer(scope, receive, send, fastapi_app, runtime, limit, started)
        except Exception as exc:
            if self._front and not started:
                await _server_error(fastapi_app, scope, receive, send, exc)
            raise
        finally:
            self._observe(runtime, status, time.perf_counter() - start)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: FastAPI,
        runtime: Any,
        limit: int,
        started: list[bool],
    ) -> int:
        """The answer's status; ``started`` gets an item once the answer's start may be sent."""
        request = Request(scope, receive)
        ctx: IntakeContext = runtime.context
        try:
            api.admit(request, ctx, api.POSTERS, runtime.settings)
            body = await _read(receive)
            if len(body) > limit:
                raise BodyTooLarge("body", limit=limit, size=len(body))
            channel, draft = api.draft_from(validate_json(body, TicketIn))
            created, answer = await service.accept_ticket_json(
                ctx=ctx, channel=channel, draft=draft
            )
        except Exception as exc:
            handler = _handler_for(app, exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response

            async def noted(message: Message) -> None:
                if message["type"] == "http.response.start":
                    started.append(True)
                await send(message)

            await response(scope, receive, noted)
            return int(response.status_code)
        status = 201 if created else 200
        started.append(True)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        return status

    def _observe(self, runtime: Any, status: int, seconds: float) -> None:
        """What ``HttpMetricsMiddleware`` records for the route: (POST, /tickets, status class)."""
        if runtime.metrics is not self._metrics:  # a new runtime (the app was started again)
            self._metrics = runtime.metrics
            self._latency.clear()
        group = status // 100
        child = self._latency.get(group)
        if child is None:
            child = runtime.metrics.http_latency.labels("POST", PATH, f"{group}xx")
            self._latency[group] = child
        child.observe(seconds)


# FastAPI's native OpenTelemetry, declared off (``TicketApp``).
NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}


class TicketApp(FastAPI):
    """The intake app: FastAPI with ``TicketFastPath`` in front of the whole app, FastAPI's
    native OpenTelemetry off (the module's docstring says why that is exact)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(telemetry=NO_TELEMETRY, **kwargs)
        self._tickets = TicketFastPath(super().__call__, front=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.root_path or getattr(self, "max_body_size", None) is not None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette's entry sets it
        await self._tickets(scope, receive, send)
