"""The evaluation process's collector settings."""

from __future__ import annotations

import gc

from services.evaluation import context


def test_the_collector_passes_over_young_objects_less_often() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        context.tune_collector()
        assert gc.get_threshold() == (context.YOUNG_THRESHOLD, 20, 20)
        assert context.YOUNG_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)
