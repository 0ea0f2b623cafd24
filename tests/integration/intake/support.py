"""Helpers for intake's integration tests (the ``env`` fixture is in conftest.py).

``running`` starts one intake app per module and database, on the real broker, with small
per-route limits so the 413s are cheap to provoke. Requests go in-process (ASGITransport). Tests
share the app, so each takes its own external ids, phone numbers and places (``env.unique()``,
``env.phone()``, ``env.address()``) and never sees another's tickets.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import func, or_, select

from services.intake.app import create_app
from services.intake.context import IntakeContext
from services.intake.models import TICKETS, outbox_table
from services.intake.settings import IntakeSettings
from shared import geo
from shared.bus import make_producer
from shared.events import Event, decode
from shared.outbox import RECORDS, is_pending, row_headers, unpack_bundle
from shared.settings import BusSettings
from tests.support import (
    Database,
    bus_settings,
    isolated_settings,
    lifespan,
    publish_event,
    wait_until,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "channels"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load(
    (FIXTURES / "expected.yaml").read_text("utf-8")
)

LIMITS = {
    "max_body_bytes": 512 << 10,
    "ticket_max_bytes": 64 << 10,
    "mail_max_bytes": 256 << 10,
    "attachment_max_bytes": 32 << 10,
    "batch_max_bytes": 256 << 10,
    "batch_max_rows": 200,
    "batch_max_unzipped_bytes": 4 << 20,
    "batch_max_cells": 20_000,
    # Tests of one module share an app and post far faster than any channel; the limit's own
    # tests start an app with one.
    "public_rate_limit": "",
}


def fixture(code: str) -> tuple[bytes, str]:
    """A channel's fixture body and the content type it is posted with."""
    found = [p for p in FIXTURES.iterdir() if p.stem == code and p.suffix != ".md"]
    assert len(found) == 1, f"{code}: expected one fixture, found {found}"
    return found[0].read_bytes(), EXPECTED[code]["content_type"]


def _addresses() -> Iterator[str]:
    """Addresses that resolve to a grid (road and house number), each place used once."""
    for area in sorted(geo.city().by_code.values(), key=lambda a: a.code):
        if area.tier is geo.Tier.GRID and area.roads and area.parent:
            village = geo.area(area.parent)
            for seg in area.roads:
                yield f"{village.address_prefix}{seg.road_zh}{seg.first_number}号"


@dataclass
class IntakeEnv:
    """One running intake app, its client and its database."""

    app: Any
    client: httpx.AsyncClient
    settings: IntakeSettings
    bootstrap: str
    prefix: str
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _places: Iterator[str] = field(default_factory=_addresses)
    _phone_base: int = field(default_factory=lambda: uuid.uuid4().int % 10**8)

    @property
    def ctx(self) -> IntakeContext:
        return self.app.state.runtime.context  # type: ignore[no-any-return]

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def unique(self, stem: str = "t") -> str:
        """An id no other test of this app uses."""
        return f"{stem}-{uuid.uuid4().hex[:8]}-{next(self._counter)}"

    def phone(self) -> str:
        """A mobile number no other test of this app uses."""
        return f"139{(self._phone_base + next(self._counter)) % 10**8:08d}"

    def address(self) -> str:
        """An address in a grid of its own."""
        return next(self._places)

    async def count(self, table: Any, *where: Any) -> int:
        async with self.runtime.engine.connect() as conn:
            query = select(func.count()).select_from(table)
            for clause in where:
                query = query.where(clause)
            return int((await conn.execute(query)).scalar_one())

    async def ticket(self, ticket_id: str) -> Any:
        """The stored row of a ticket (clear text: intake's own store)."""
        async with self.runtime.engine.connect() as conn:
            return (
                await conn.execute(select(TICKETS).where(TICKETS.c.ticket_id == ticket_id))
            ).first()

    async def events(self, subject: str | None = None) -> list[tuple[Event, dict[str, Any]]]:
        """Events in intake's outbox (about one ticket, if given), decoded, with their row (a
        bundle's events each with the bundle's row)."""
        t = outbox_table
        query = select(t).order_by(t.c.id)
        if subject is not None:
            query = query.where(or_(t.c.key == subject, t.c[RECORDS].is_not(None)))
        async with self.runtime.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        out = []
        for row in rows:
            records = (
                unpack_bundle(row.payload)
                if row.records is not None
                else [(row.key.encode(), row.payload, row_headers(row.headers, row.header_block))]
            )
            for key, value, headers in records:
                if subject is None or key == subject.encode():
                    out.append((decode(value, headers, key), dict(row._mapping)))
        return out

    async def publish(self, *events: Event) -> None:
        """Put events on their topics, as dispatch and mediation would."""
        producer = make_producer(
            BusSettings(**bus_settings(self.bootstrap, self.prefix)), client_id="test-publisher"
        )
        await producer.start()
        try:
            for event in events:
                await publish_event(producer, self.settings, event.topic, event)
        finally:
            await producer.stop()

    async def published(self) -> None:
        """Wait until the relay has published everything in the outbox."""

        async def drained() -> bool:
            return await self.count(outbox_table, is_pending(outbox_table)) == 0

        await wait_until(drained, timeout=20, what="the outbox to drain")


def ticket_body(env: IntakeEnv, **changes: Any) -> dict[str, Any]:
    """A canonical ``POST /tickets`` body of this test's own (external id, phone), with changes."""
    body: dict[str, Any] = {
        "external_id": env.unique("hl"),
        "title": "小区路灯不亮",
        "content": "塔山社区3号楼门口路灯坏了三天，晚上很黑。",
        "citizen_phone": env.phone(),
        "category_code": "0102",
    }
    body.update(changes)
    return body


@contextlib.asynccontextmanager
async def running(database: Database, bootstrap: str, **overrides: Any) -> AsyncIterator[IntakeEnv]:
    """Migrate and start intake (lifespan and all) and yield its environment."""
    settings = await isolated_settings(
        IntakeSettings,
        service="intake",
        database=database,
        bootstrap=bootstrap,
        **{**LIMITS, **overrides},
    )
    app = create_app(settings)
    async with (
        lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://intake", timeout=30
        ) as client,
    ):
        yield IntakeEnv(app, client, settings, bootstrap, settings.kafka_topic_prefix)
