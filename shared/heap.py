"""The cyclic garbage collector of a long-running service: its start-up heap frozen out of the
collector's reach, its young generation collected less often. Every service calls ``settle``
once its start-up work is done.

Measured reasons, service by service:

- a consumer's fetch of a few hundred records allocates hundreds of thousands of short-lived
  objects (decoded events, models, row dicts, drafts). At Python's default threshold (700) the
  young collections trigger full ones every few fetches, each walking everything the process
  keeps (modules, schemas, the area tree, the org chart, the calendar): in dispatch's consumer
  (fetches of 300 on PostgreSQL) ~7 full passes of ~100 ms and ~1,000 young ones, about a fifth
  of its CPU; in evaluation's apply 0.046 of 0.204 ms an event (0.163 → 0.141 ms at 100,000);
- an intake batch file's young collections and the full ones they trigger cost ~70 µs of every
  row at the default threshold (1,000-row files on PostgreSQL), about 7 µs at 100,000; with the
  start-up heap frozen its full collections went from ~150 ms to ~50 ms;
- committee answers stalled behind full passes over evaluation's start-up heap: at 10 M facts
  a 5 ms answer's p99 was 40–140 ms and a department slice's ~300 ms; frozen, 8 ms and 65 ms
  (``make bench-evaluation``);
- intake's batch files keep every row's objects (its draft, normalized ticket, appeal, row and
  event) alive until the group's commit, and a worker holds many files at once (32 wrk
  connections, two workers): the allocations a young collection waits for are mostly of
  objects still alive, so each collection walks all of them (54–73 ms, ~10 µs of every row at
  100,000). Intake settles with ``FILES_YOUNG_THRESHOLD``: no young collection in 64 files in
  flight 32 at a time, the same peak memory (a file's objects are freed by their counts, not
  by the collector); the collection that does come, past a million net allocations, walks
  what is alive then (133 ms at 400,000).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000
"""Allocations between two young collections (Python's default: 700)."""

FILES_YOUNG_THRESHOLD = 1_000_000
"""The same for a service whose requests hold thousands of objects each until their commit
(intake's batch files)."""

_frozen = False


def tune(young: int | None = None) -> None:
    """Collect the young generation every ``young`` allocations (``YOUNG_THRESHOLD``)."""
    gc.set_threshold(YOUNG_THRESHOLD if young is None else young, 20, 20)


def settle(young: int | None = None) -> None:
    """After start-up: freeze what is alive now (once per process) and ``tune``; objects made
    afterwards are still collected."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
    tune(young)
