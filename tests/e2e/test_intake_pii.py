"""No clear-text phone or ID number leaves intake: post every channel's fixture (and a callback)
through HTTP with all four services running, let dispatch route them and evaluation count them,
then read every record of every topic — keys, headers and values — and look for the numbers."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from sqlalchemy import select

from services.intake.channels import channels
from services.intake.models import TICKETS
from shared import pii
from shared.bus import make_consumer, topic_name
from shared.events import ALL_TOPICS
from shared.settings import BusSettings
from tests.integration.intake.support import fixture
from tests.support import bus_settings, wait_until

_SEPARATED = re.compile(r"(?<=\d)[\s\-./()（）]+(?=\d)")
# Ids and hashes are hex: a run of decimal digits inside one is not a phone number.
_HEX_IDS = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-f]{32,}"
)
_CANDIDATES = re.compile(r"\+?\d[\d\s\-./()（）]{5,24}\d[Xx]?")


def numbers_in(text: str) -> set[str]:
    """Phone and resident ID numbers in a text, as bare digits (separators removed)."""
    found = set()
    for match in _CANDIDATES.finditer(text):
        compact = _SEPARATED.sub("", match.group()).lstrip("+").upper()
        digits = pii.normalize_phone(compact) or ""
        if pii.is_mobile(digits) or pii.is_landline(digits):
            found.add(digits)
        if re.fullmatch(r"\d{17}[\dX]", compact) and pii.is_valid_id_number(compact):
            found.add(compact)
    return found


async def read_all(settings: BusSettings, *, quiet_s: float = 3.0) -> list[ConsumerRecord]:
    """Every record on every topic, read from the start until the topics stay quiet."""
    consumer = make_consumer(
        settings,
        *(topic_name(settings, t) for t in ALL_TOPICS),
        group_id=f"{settings.kafka_topic_prefix}.pii-scan",
        client_id="pii-scan",
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                records.extend(batch)
                last = time.monotonic()
    finally:
        await consumer.stop()
    return records


async def test_no_clear_text_number_reaches_any_topic(broker, sqlite_db, prefix, suite) -> None:
    async with suite(bootstrap=broker.bootstrap, database=sqlite_db, prefix=prefix) as services:
        intake, evaluation = services["intake"], services["evaluation"]
        ticket_ids: list[str] = []
        async with intake.client() as client:
            for channel in channels():
                body, content_type = fixture(channel.code)
                response = await client.post(
                    f"/channels/{channel.code}/tickets",
                    content=body,
                    headers={"content-type": content_type},
                )
                assert response.status_code in (201, 207, 410), (channel.code, response.text)
                answer = response.json()
                if response.status_code != 410:
                    created = answer.get("results", [answer])
                    ticket_ids += [r["ticket_id"] for r in created if r.get("ticket_id")]
            posted = len(ticket_ids)
            callback, content_type = fixture("callback-12345-revisit")
            payload = {
                **orjson.loads(callback),
                "gdbh": ticket_ids[0],
                "hfnr": "回访电话13957123468",
            }
            answered = await client.post(
                "/channels/callback-12345-revisit/callbacks",
                content=orjson.dumps(payload),
                headers={"content-type": content_type},
            )
            assert answered.status_code == 201, answered.text

        async def counted() -> bool:
            async with evaluation.client() as client:
                summary = (await client.get("/summary")).json()
            return summary["received"] == posted and summary["feedback"] == 1

        await wait_until(counted, timeout=60, what=f"evaluation to count {posted} tickets")

        # Everything intake holds in clear text: the numbers that must not leave it.
        async with intake.runtime.engine.connect() as conn:
            rows = (await conn.execute(select(TICKETS))).all()
        secret: set[str] = {"13957123468"}
        for row in rows:
            for value in (row.citizen_phone, row.citizen_id_number, row.title, row.content):
                secret |= numbers_in(value or "")
            secret |= numbers_in(row.address or "")
            secret |= numbers_in(orjson.dumps(row.extra).decode())
        for channel in channels():
            body, _ = fixture(channel.code)
            if not body.startswith(b"PK"):  # workbooks are zip files; their rows are in the DB
                secret |= numbers_in(body.decode("utf-8", "replace"))
        assert len(secret) > 30, "the fixtures should carry plenty of numbers"

        await asyncio.sleep(1.0)  # let dispatch's and evaluation's own events settle
        records = await read_all(BusSettings(**bus_settings(broker.bootstrap, prefix)))
        topics = {r.topic.removeprefix(f"{prefix}.") for r in records}
        assert {"intake.tickets", "dispatch.events"} <= topics
        assert sum(r.topic.endswith(".intake.tickets") for r in records) >= posted + 1
        leaks: list[tuple[str, str]] = []
        for record in records:
            parts: list[Any] = [record.key or b"", record.value or b""]
            parts += [k.encode() + b"=" + v for k, v in record.headers or ()]
            text = b"\n".join(parts).decode("utf-8", "replace")
            flat = _SEPARATED.sub("", text)
            leaks += [(record.topic, n) for n in secret if n in text or n in flat]
            leaks += [
                (record.topic, n) for n in numbers_in(_HEX_IDS.sub(" ", text)) if n not in secret
            ]
        assert leaks == [], leaks[:10]
