"""The whole-suite benchmark's view of PostgreSQL: the backends' CPU by application name, and the
statements each process sends (``bench/statement_count``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from bench.suite import (
    STATEMENT_COUNT,
    BackendSampler,
    database_usage,
    read_statement_counts,
    statement_kind,
)
from tests.support import PG_URL, postgres_url

pytestmark = pytest.mark.postgres


async def _url() -> str:
    url, reason = await postgres_url(PG_URL)
    if url is None:
        pytest.skip(reason)
    return url


async def _busy(url: str, name: str, rows: int) -> None:
    conn = await asyncpg.connect(url, server_settings={"application_name": name})
    try:
        await conn.fetchval("SELECT count(*) FROM generate_series(1, $1::int)", rows)
    finally:
        await conn.close()


async def test_the_sampler_counts_backends_opened_and_closed_during_the_window() -> None:
    url = await _url()
    name = f"fq-test-{uuid.uuid4().hex[:12]}"
    other = f"fq-test-{uuid.uuid4().hex[:12]}"
    kept = await asyncpg.connect(url, server_settings={"application_name": name})
    try:
        sampler = BackendSampler(url, {name: "dispatch", other: "intake"}, interval=0.05)
        await asyncio.to_thread(sampler.start)
        # A backend that lives through the window, one that opens and closes inside it (sampled
        # while it works), and one of another name that is not counted as dispatch.
        await kept.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
        await _busy(url, name, 3_000_000)
        await asyncio.sleep(0.2)
        await asyncio.to_thread(sampler.stop)
    finally:
        await kept.close()
    usage = sampler.usage()
    cpu, seen, opened, closed = usage["dispatch"]
    assert (seen, opened, closed) == (2, 1, 1)
    assert cpu > 0.2  # two counts over 3 M rows: some hundreds of ms of a backend's CPU
    assert "intake" not in usage

    rows = database_usage(sampler, {name: "dispatch"}, None, load_s=1.0, tickets=1000)
    dispatch = next(u for u in rows if u.service == "dispatch")
    assert dispatch.cpu_ms_per_ticket == pytest.approx(cpu, rel=0.01)
    assert dispatch.statements_per_ticket is None


def test_every_execution_is_counted_by_application_name(tmp_path: Path) -> None:
    if asyncio.run(postgres_url(PG_URL))[0] is None:
        pytest.skip("no PostgreSQL")
    folder = tmp_path / "statements"
    folder.mkdir()
    script = f"""
import asyncio, asyncpg, time
async def main():
    conn = await asyncpg.connect({PG_URL!r}, server_settings={{"application_name": "fq-a"}})
    async with conn.transaction():
        await conn.fetch("SELECT 1")
        prepared = await conn.prepare("SELECT $1::int")
        await prepared.fetchval(1)
        await prepared.fetchval(2)
        await conn.execute("SELECT $1::int", 3)
        await conn.executemany("SELECT $1::int", [(4,), (5,)])
    await conn.close()
asyncio.run(main())
time.sleep(0.8)
"""
    env = {**os.environ, "FENGQIAO_BENCH_STATEMENTS": str(folder)}
    env["PYTHONPATH"] = os.pathsep.join([str(STATEMENT_COUNT), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    counts = read_statement_counts(folder)
    assert counts[("fq-a", "BEGIN;")] == 1
    assert counts[("fq-a", "COMMIT;")] == 1
    assert counts[("fq-a", "SELECT 1")] == 1
    # Two prepared, one execute, and an executemany of two rows (one round trip, two runs).
    assert counts[("fq-a", "SELECT $1::int")] == 5
    assert len(json.loads(next(folder.glob("*.json")).read_text())) == 4
    assert [statement_kind(t) for t in ("BEGIN;", "WITH w0 AS (…)", "select 1")] == [
        "BEGIN",
        "WITH",
        "SELECT",
    ]
