"""A candidate only its citizen found is read without its place and shingles when the citizen
alone makes a match (the default policy): every look-up hands ``decide`` what gives the same
verdict as the full rows, look-up after look-up, each mode on its own shingle cache. Run on a
real store (SQLite, and PostgreSQL where a server answers) with many citizens, grids, addresses,
places and near-identical texts, each look-up group of one to seventy appeals."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fengqiao import registry
from services.intake import repeats
from services.intake.models import TICKETS
from services.intake.repeat_lookup import (
    LookupConnections,
    ShingleCache,
    _postgres_candidates,
    decide,
    load_earlier,
    pack_shingles,
)
from services.intake.settings import IntakeSettings
from shared import db
from tests.support import Database

NOW = datetime(2026, 12, 7, 9, tzinfo=UTC)
POLICY = repeats.RepeatPolicy()
PER_KEY = 5
TEXTS = [
    "小区门口路灯坏了三天晚上出行不便",
    "小区门口路灯坏了四天晚上出行很不便",
    "楼下烧烤店每晚营业到凌晨噪音扰民",
    "楼下烧烤店营业到凌晨两点噪音很大",
    "道路积水没过脚踝已经持续两天",
    "垃圾桶三天没人清运气味很大",
]
CITIZENS = [f"{n:064x}" for n in range(12)]
GRIDS = [None, "G01", "G02", "G03"]
ADDRESSES = [None, "a1", "a2", "a3", "a4"]
SPOTS = [(120.1, 30.2), (120.1002, 30.2001), (120.3, 30.4)]  # two within 100 m, one far


def _place(rng: random.Random) -> dict[str, Any]:
    longitude, latitude = rng.choice(SPOTS) if rng.random() < 0.6 else (None, None)
    return {
        "citizen_hash": rng.choice(CITIZENS) if rng.random() < 0.8 else None,
        "grid_code": rng.choice(GRIDS),
        "address_key": rng.choice(ADDRESSES),
        "longitude": longitude,
        "latitude": latitude,
    }


def _stored(rng: random.Random, n: int) -> dict[str, Any]:
    text = rng.choice(TEXTS)
    repeat_of = f"T{rng.randrange(n):06d}" if n and rng.random() < 0.3 else None
    return {
        "ticket_id": f"T{n:06d}",
        "channel": "web",
        "external_id": f"e{n}",
        "received_at": NOW - timedelta(minutes=rng.randrange(1, 60 * 24 * 40)),
        "title": "t",
        "content": text,
        "category_code": "0101",
        "repeat_of": repeat_of,
        "repeat_count": rng.randrange(4) if repeat_of else 0,
        "shingles": pack_shingles(repeats.shingles(text, POLICY.shingle_size)),
        "attachments": [],
        "extra": {},
        **_place(rng),
    }


def _appeal(rng: random.Random, n: int) -> repeats.Appeal:
    text = rng.choice(TEXTS)
    return repeats.Appeal(
        received_at=NOW + timedelta(seconds=n),
        text=text,
        shingles=repeats.shingles(text, POLICY.shingle_size),
        ticket_id=f"N{n:06d}",
        **_place(rng),
    )


async def test_slim_candidates_give_the_verdicts_of_full_ones(database: Database) -> None:
    rng = random.Random(20261207)
    settings = IntakeSettings(**database.settings_for("intake_lookup_slim"))
    await registry.upgrade_async("intake", settings)
    engine = db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(TICKETS.insert(), [_stored(rng, n) for n in range(600)])
        connections = LookupConnections(engine)
        caches = {True: ShingleCache(), False: ShingleCache()}
        repeats_found = slim_rows = 0
        for group in range(40):
            size = 70 if group % 10 == 9 else rng.randint(1, 5)
            appeals = [_appeal(rng, group * 100 + k) for k in range(size)]
            verdicts = {}
            for slim in (True, False):
                handed = await load_earlier(
                    connections,
                    appeals,
                    policy=POLICY,
                    per_key=PER_KEY,
                    cache=caches[slim],
                    slim=slim,
                )
                verdicts[slim] = [
                    decide(a, c, POLICY) for a, c in zip(appeals, handed, strict=True)
                ]
                if slim:
                    slim_rows += sum(
                        e.appeal.grid_code is None and e.appeal.longitude is None
                        for each in handed
                        for e in each
                    )
            assert verdicts[True] == verdicts[False], group
            repeats_found += sum(v.is_repeat for v in verdicts[True])
        await connections.close()
    finally:
        await engine.dispose()
    # the data exercised both kinds of candidate and both outcomes
    assert repeats_found > 20 and slim_rows > 0


def test_the_citizens_rows_are_slim_only_when_asked() -> None:
    full, slim = _postgres_candidates(PER_KEY), _postgres_candidates(PER_KEY, True)
    citizens_full, *others_full = full.split(" UNION ALL ")
    citizens_slim, *others_slim = slim.split(" UNION ALL ")
    assert others_full == others_slim
    assert "shingles" in citizens_full and "shingles" not in citizens_slim
    assert "NULL::bytea" in citizens_slim


async def test_a_policy_that_needs_a_citizens_text_refuses_slim_rows(database: Database) -> None:
    if database.kind != "sqlite":
        pytest.skip("a check before any statement: one database shows it")
    policy = repeats.RepeatPolicy(citizen_min_similarity=0.3)
    settings = IntakeSettings(**database.settings_for("intake_lookup_slim_policy"))
    await registry.upgrade_async("intake", settings)
    engine = db.create_engine(settings)
    try:
        connections = LookupConnections(engine)
        appeal = _appeal(random.Random(1), 1)
        with pytest.raises(ValueError, match="need their shingles"):
            await load_earlier(connections, [appeal], policy=policy, per_key=PER_KEY, slim=True)
        await connections.close()
    finally:
        await engine.dispose()
