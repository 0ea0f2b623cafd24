"""Stopping a service's background tasks: a lost cancellation must not hold the shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.runtime import stop_tasks


async def _swallows_one_cancel(events: list[str]) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        events.append("first cancel swallowed")  # as wait_for on 3.11 can do
    await asyncio.sleep(3600)


async def _never_stops(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    events: list[str] = []
    polite = asyncio.create_task(asyncio.sleep(3600))
    stubborn = asyncio.create_task(_swallows_one_cancel(events))
    await asyncio.sleep(0)
    await stop_tasks([polite, stubborn], name="svc", patience=0.05)
    assert polite.cancelled() and stubborn.cancelled()
    assert events == ["first cancel swallowed"]


async def test_a_task_that_never_stops_is_left_behind_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    hopeless = asyncio.create_task(_never_stops(release), name="hopeless")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="shared.runtime"):
        await asyncio.wait_for(stop_tasks([hopeless], name="svc", patience=0.02, tries=2), 2)
    assert not hopeless.done()
    assert "hopeless did not stop" in caplog.text
    release.set()
    hopeless.cancel()
    await hopeless
