"""The worker's collector settings: import-time objects frozen, young collections rarer, cycles still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared.gc_tuning import YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_tuning_freezes_what_exists_and_raises_the_young_threshold(restored: None) -> None:
    gc.unfreeze()
    existing = _Node()
    tune_garbage_collector()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_freeze_count() > 0
    assert not any(o is existing for o in gc.get_objects())  # frozen: no collection walks it


def test_cycles_made_after_tuning_are_still_collected_without_asking(restored: None) -> None:
    tune_garbage_collector()
    ref = weakref.ref(_Node())
    churn = [[] for _ in range(3 * YOUNG_THRESHOLD)]  # enough allocations for an automatic young collection
    del churn
    assert ref() is None
