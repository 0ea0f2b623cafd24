"""The whole-suite benchmark's ``--windows``: the load a stretch at a time, each stretch's rate
and CPU a ticket, from CPU snapshots taken during the load and the tickets' own received times."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from bench.suite import Snapshot, WindowSampler, render_windows, window_rows

T0 = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_each_stretch_is_its_tickets_and_the_cpu_used_in_it() -> None:
    snapshots = [
        Snapshot(_at(0), {"intake": 10.0, "broker": 1.0}, {"intake": 2.0}, 100.0, 1.0),
        Snapshot(_at(30), {"intake": 16.0, "broker": 1.5}, {"intake": 5.0}, 148.0, 4.0),
        # nothing received in this stretch: left out
        Snapshot(_at(60), {"intake": 16.0, "broker": 1.5}, {"intake": 5.0}, 150.0, 4.0),
        Snapshot(
            _at(75), {"intake": 20.0, "broker": 2.5}, {"intake": 8.0, "evaluation": 1.0}, 177.0, 4.3
        ),
    ]
    received = [_at(0)] + [_at(1 + i * 0.001) for i in range(12_000)]  # in the first stretch
    received += [_at(61 + i * 0.001) for i in range(4_000)]  # in the last
    rows = window_rows(snapshots, reversed(received))  # in any order
    assert [(w.ends_s, w.tickets_per_s) for w in rows] == [(30, 400.0), (75, 266.7)]
    first, last = rows
    assert first.processes_ms == {"intake": 0.5, "broker": 0.042}
    assert first.backends_ms == {"intake": 0.25}
    assert first.total_ms == 0.792
    assert (first.machine_cores, first.steal_cores) == (1.6, 0.1)
    # A service whose backends first show in a later snapshot counts from zero.
    assert last.processes_ms == {"intake": 1.0, "broker": 0.25}
    assert last.backends_ms == {"intake": 0.75, "evaluation": 0.25}
    assert last.total_ms == 2.25
    assert (last.machine_cores, last.steal_cores) == (1.8, 0.02)
    table = render_windows("postgres", rows)
    assert (
        "| ends (s) | tickets/s | intake | broker | intake's backends | evaluation's backends "
        "| all | machine busy (cores) | stolen (cores) |"
    ) in table
    assert "| 75 | 267 | 1.000 | 0.250 | 0.750 | 0.250 | 2.250 | 1.80 | 0.02 |" in table


def test_the_sampler_snaps_at_its_start_every_period_and_once_at_its_stop() -> None:
    """... and a last stretch shorter than half a period is joined to the one before."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler = WindowSampler(0.2, {busy.pid: "busy"}, None)
        sampler.start()
        time.sleep(0.85)
        sampler.stop()
        sampler.stop()  # once
    finally:
        busy.kill()
        busy.wait()
    taken = sampler.snapshots
    assert 4 <= len(taken) <= 6  # the start, ~4 periods, the stop (the last joined)
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(taken)]
    assert min(gaps) >= 0.1, gaps
    assert all(set(s.processes) == {"busy"} and s.backends == {} for s in taken)
    assert taken[-1].processes["busy"] > taken[0].processes["busy"]  # its CPU, as it spun
    assert [s.at for s in taken] == sorted(s.at for s in taken)
