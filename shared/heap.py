"""The cyclic garbage collector of a process that applies fetched batches: its start-up heap
frozen out of the collector's reach, its young generation collected less often.

A consumer's fetch of a few hundred records allocates hundreds of thousands of short-lived
objects (decoded events, models, row dicts, drafts). At Python's default threshold (700) the
young collections trigger full ones every few fetches, each walking everything the process
keeps (modules, schemas, the area tree, the org chart, the calendar): in dispatch's consumer
(fetches of 300 on PostgreSQL) ~7 full passes of ~100 ms and ~1,000 young ones, about a fifth
of its CPU. Intake and evaluation tune their collectors the same way.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000
"""Allocations between two young collections (Python's default: 700)."""

_frozen = False


def settle() -> None:
    """After start-up: freeze what is alive now (once per process) and collect the young
    generation every ``YOUNG_THRESHOLD`` allocations; objects made afterwards are still
    collected."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
