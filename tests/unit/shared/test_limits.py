"""Oversized bodies get a 413 naming the limit, declared or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request

from shared.limits import BodySizeLimitMiddleware


def make_app(limit: int) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=limit)
    return app


async def post(app: FastAPI, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.post("/echo", content=content)


async def test_body_within_limit_passes() -> None:
    response = await post(make_app(100), b"x" * 100)
    assert response.json() == {"size": 100}


async def test_declared_oversize_body_is_refused_with_413() -> None:
    response = await post(make_app(100), b"x" * 101)
    assert response.status_code == 413
    assert "101 bytes exceeds the limit of 100 bytes" in response.json()["detail"]


async def test_streamed_oversize_body_is_refused_with_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 40

    response = await post(make_app(100), chunks())
    assert response.status_code == 413
    assert response.json()["limit_bytes"] == 100
