"""Broker rotations under load lose nothing, counted the way the soak counts: every event intake
and dispatch emitted about an acknowledged ticket is applied by evaluation, the ticket's way
through dispatch whatever it was — assigned to a department, or offered to the grab pool.

Real processes (``fengqiao up`` on SQLite) with the broker rotated on a schedule of seconds while
tickets are posted; prints accepted / stored / counted / lost / duplicated.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.embedded import (
    SERVICE_NAMES,
    Load,
    SuiteProcess,
    fault_suite,
    post_tickets,
    tally,
    ticket,
    wait_counted,
)
from shared.events.dispatch import GrabOffered
from shared.geo.model import Tier
from shared.geo.tree import city

# The load may take up to 90 s to span two rotations and the count up to 90 s more: the test's
# own deadlines, not the default 120 s timeout, decide (on a loaded machine it hit the default
# mid-count, with no count printed).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(210)]

ROTATE_EVERY_S = 6.0
# Road and street-light repairs in this district go to the grab pool (rules.yaml, urban-core-grab):
# one grid each, so that no ticket repeats another (a third repeat goes to a task force instead).
GRAB_GRIDS = [a.code for a in city().subtree("339902") if a.tier == Tier.GRID]


def grab_or_assign(run: str, n: int) -> dict[str, str]:
    """Even tickets: a street light in the grab district, in a grid of its own; odd ones: the
    plain ticket, which dispatch assigns."""
    body = ticket(run, n)
    if n % 2 == 0:
        body["grid_code"] = GRAB_GRIDS[(n // 2) % len(GRAB_GRIDS)]
    return body


@pytest.fixture(scope="module")
def rotating_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteProcess]:
    var_dir = tmp_path_factory.mktemp("rotating") / "var"
    rotations = {
        "SUPERVISOR_SAMPLE_INTERVAL_S": "0.5",
        "SUPERVISOR_BROKER_ROTATE_RSS_MB": "0",
        "SUPERVISOR_BROKER_ROTATE_EVERY_HOURS": str(ROTATE_EVERY_S / 3600),
    }
    with fault_suite(var_dir, rotations) as suite:
        yield suite


def _rotations(suite: SuiteProcess) -> int:
    metrics = suite.supervisor_metrics()
    return int(metrics.get(("fengqiao_supervisor_broker_rotations_total", "schedule"), 0))


def _copy_databases(var_dir: Path, into: Path) -> Path:
    """A consistent copy of the three databases the tally reads (the suite keeps writing)."""
    into.mkdir()
    for name in ("intake", "dispatch", "evaluation"):
        source = sqlite3.connect(f"file:{var_dir / name}.db?mode=ro", uri=True)
        target = sqlite3.connect(into / f"{name}.db")
        with source, target:
            source.backup(target)
        source.close()
        target.close()
    return into


async def test_rotations_under_load_deliver_every_event_once(
    rotating_suite: SuiteProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = rotating_suite
    load = Load(run=f"rotate-{uuid.uuid4().hex[:6]}")
    first = _rotations(suite)
    # Post in waves until the load has spanned two rotations (and at least 120 tickets).
    deadline = time.monotonic() + 90
    posted = 0
    while posted < 120 or _rotations(suite) < first + 2:
        assert time.monotonic() < deadline, "two rotations did not happen during the load"
        await post_tickets(
            suite.url("intake"),
            load,
            range(posted, posted + 20),
            concurrency=4,
            make=grab_or_assign,
        )
        posted += 20
        await asyncio.sleep(0.2)

    result = await wait_counted(suite, load, timeout=90)
    # What the relays sent again onto the new brokers: with each rotation's handover, the rows
    # published since the first record some consumer had not read, not all they retain.
    published = sum(suite.service_total(s, "fengqiao_events_produced_total") for s in SERVICE_NAMES)
    replayed = sum(
        suite.service_total(s, "fengqiao_outbox_republished_total") for s in SERVICE_NAMES
    )
    with capsys.disabled():
        print(
            f"\n{result.line(f'{_rotations(suite) - first} rotations under load')} "
            f"(client retries {load.retries}); replayed {replayed:.0f} of "
            f"{published:.0f} events published"
        )
    assert result.accepted == posted and result.stored == posted
    assert result.lost == 0 and result.duplicated == 0

    # The grab pool was on the way: those tickets have no dispatch date, and are not lost.
    ids = set(load.accepted.values())
    with sqlite3.connect(f"file:{suite.var_dir / 'dispatch.db'}?mode=ro", uri=True) as conn:
        pooled = {
            row[0]
            for row in conn.execute(
                "SELECT ticket_id FROM dispatches WHERE status = 'pending_grab'"
            )
        } & ids
    # Each grid's first two street lights reach the pool; from the third on a grid's appeal
    # repeats two earlier ones and goes to the task force (rules.yaml, repeat-task-force), which
    # a long load reaches once it has used every grid twice.
    per_grid = Counter(grab_or_assign(load.run, n).get("grid_code") for n in range(0, posted, 2))
    poolable = sum(min(2, count) for count in per_grid.values())
    assert len(pooled) >= poolable // 2, (len(pooled), poolable, posted)

    # And the count can fail: an event evaluation did not apply makes its ticket lost.
    copy = _copy_databases(suite.var_dir, tmp_path / "copy")
    with sqlite3.connect(copy / "evaluation.db") as conn:
        conn.execute(
            "DELETE FROM eval_ledger WHERE event_id = ("
            " SELECT event_id FROM eval_ledger WHERE event_type = ? LIMIT 1)",
            (GrabOffered.cloudevent_type(),),
        )
    assert tally(copy, load).lost == 1
