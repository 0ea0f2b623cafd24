"""The collector settings of the consumers that apply fetched batches."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.dispatch.context import DispatchContext
from services.dispatch.settings import DispatchSettings
from services.intake import classifier
from services.intake.context import IntakeContext
from services.intake.settings import IntakeSettings
from services.mediation.context import MediationContext
from services.mediation.settings import MediationSettings
from shared import heap


@pytest.fixture
def default_collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_settling_freezes_the_heap_and_collects_young_objects_less_often(
    default_collector: None,
) -> None:
    heap.settle()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 20, 20)
    assert heap.YOUNG_THRESHOLD > 700
    assert gc.get_freeze_count() > 0


def test_tuning_alone_collects_young_objects_less_often(default_collector: None) -> None:
    heap.tune()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 20, 20)


async def test_dispatch_and_mediation_settle_their_collector_when_they_start(
    default_collector: None,
) -> None:
    dispatch = DispatchContext(DispatchSettings(load_organisation_on_startup=False))
    await dispatch.start()
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    gc.set_threshold(700, 10, 10)
    await MediationContext(MediationSettings()).start()
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD


async def test_intake_settles_with_fewer_young_collections_for_its_files(
    default_collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch file's rows stay alive until their commit, so intake's young collections wait
    for ten times the allocations the consumers' do."""
    monkeypatch.setattr(classifier, "warm_up", lambda: None)
    await IntakeContext(IntakeSettings()).start()
    assert gc.get_threshold() == (heap.FILES_YOUNG_THRESHOLD, 20, 20)
    assert heap.FILES_YOUNG_THRESHOLD == 10 * heap.YOUNG_THRESHOLD
    heap.tune(heap.FILES_YOUNG_THRESHOLD)
    assert gc.get_threshold()[0] == heap.FILES_YOUNG_THRESHOLD
