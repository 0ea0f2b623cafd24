"""The whole-suite benchmark's drain: evaluation's counts at the load's end and at lag zero make
the events drained, their rate and CPU an event; ``--stall-evaluation`` stops and continues
evaluation's process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from bench.suite import drain_of, stall_timers


def test_the_drain_is_the_difference_of_the_counts() -> None:
    drain = drain_of(
        (1000.0, {"resumed": 10.0, "refolded": 20.0}),
        (5000.0, {"resumed": 1010.0, "refolded": 2020.0}),
        2.0,
        0.4,
        0.3,
        "25:25",
    )
    assert (drain.events, drain.events_per_s, drain.seconds) == (4000, 2000, 2.0)
    assert (drain.process_ms_per_event, drain.backends_ms_per_event) == (0.1, 0.075)
    assert (drain.resumed, drain.refolded, drain.stalled) == (1000, 2000, "25:25")
    idle = drain_of((7.0, {}), (7.0, {}), 0.5, 0.0, None, None)
    assert idle.events == 0 and idle.process_ms_per_event is None and idle.resumed == 0


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_the_stall_stops_the_process_and_continues_it() -> None:
    assert stall_timers(1, None) == []
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        timers = stall_timers(sleeper.pid, "0.1:0.4")
        for timer in timers:
            timer.start()
        time.sleep(0.3)
        assert _state(sleeper.pid) == "T"  # stopped
        time.sleep(0.5)
        assert _state(sleeper.pid) == "S"  # continued, sleeping again
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
