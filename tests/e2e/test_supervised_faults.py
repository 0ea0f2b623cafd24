"""``fengqiao up`` heals: SIGKILL any one process while tickets are being posted, and the
supervisor restarts it alone; every acknowledged ticket is still counted once.

Real processes (the supervisor, four uvicorn services, tansu) on SQLite, one suite for the
module; each case posts its own tickets and prints accepted / stored / counted / lost /
duplicated.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.embedded import (
    SERVICE_NAMES,
    Load,
    SuiteProcess,
    fault_suite,
    post_tickets,
    wait_counted,
)
from shared.broker import free_port, wait_for_port
from tests.support import wait_until

TICKETS = 300

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteProcess]:
    var_dir = tmp_path_factory.mktemp("supervised") / "var"
    with fault_suite(var_dir, {"SUPERVISOR_RESTART_BACKOFF_S": "0.2"}) as suite:
        yield suite


@pytest.mark.parametrize("target", [*SERVICE_NAMES, "broker"])
async def test_a_killed_process_restarts_alone_and_no_ticket_is_lost_or_doubled(
    running_suite: SuiteProcess, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = running_suite
    bystanders = {n: suite.pid(n) for n in (*SERVICE_NAMES, "broker") if n != target}
    restarts_before = suite.restarts(target)
    load = Load(run=f"kill-{target}-{uuid.uuid4().hex[:6]}")
    posting = asyncio.create_task(
        post_tickets(suite.url("intake"), load, range(TICKETS), concurrency=4)
    )

    async def a_third_accepted() -> bool:
        return len(load.accepted) >= TICKETS // 3 or posting.done()

    await wait_until(a_third_accepted, interval=0.01, what="a third of the tickets accepted")
    assert not posting.done(), "the load ended before the kill: it would not be mid-load"
    old_pid = suite.kill(target)
    await asyncio.to_thread(suite.wait_restarted, target, old_pid)
    await posting

    result = await wait_counted(suite, load, timeout=60)
    with capsys.disabled():
        print(f"\n{result.line(f'SIGKILL {target} mid-load')} (client retries {load.retries})")
    assert result.accepted == TICKETS and result.stored == TICKETS
    assert result.lost == 0 and result.duplicated == 0
    assert suite.restarts(target) == restarts_before + 1
    # Restarted alone: everything else kept its process.
    assert {n: suite.pid(n) for n in bystanders} == bystanders
    output = (suite.var_dir / "log" / "supervisor.log").read_text()
    assert f"{target} exited (-9); restart #{restarts_before + 1}" in output


def test_metrics_name_every_supervised_process(running_suite: SuiteProcess) -> None:
    metrics = running_suite.supervisor_metrics()
    for name in (*SERVICE_NAMES, "broker"):
        assert metrics[("fengqiao_supervisor_process_up", name)] == 1
        assert ("fengqiao_supervisor_restarts_total", name) in metrics
        assert metrics[("fengqiao_supervisor_process_peak_rss_bytes", name)] > 0
    assert Path(running_suite.var_dir / "run" / "broker.pid").exists()


def test_the_broker_command_stops_tansu_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fengqiao.cli", "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # as a background job: no Ctrl-C reaches it
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "tansu still holds the port"
