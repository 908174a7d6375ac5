"""When the watch agent collects its cyclic garbage in full (pure: Python's collector only)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from reconcile.watch.collection import CycleCollector


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """Every full collection made while the test runs, as it happens."""
    made: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            made.append(1)

    gc.callbacks.append(seen)
    yield made
    gc.callbacks.remove(seen)


def _survivors(count: int) -> list[object]:
    """Cyclic objects kept alive: once enough are old, Python collects every generation."""
    kept: list[object] = []
    for _ in range(count):
        cycle: list[object] = []
        cycle.append(cycle)
        kept.append(cycle)
    return kept


def test_python_makes_no_full_collection_of_its_own_in_a_deferred_stretch(full_collections: list[int]) -> None:
    _survivors(300_000)
    assert full_collections, "Python collected nothing in full by itself: the test shows nothing"
    full_collections.clear()
    before = gc.get_threshold()
    with CycleCollector().deferred():
        _survivors(300_000)
        assert gc.get_threshold()[:2] == before[:2]
    assert full_collections == []
    assert gc.get_threshold() == before


@pytest.fixture
def only_asked_collections() -> Iterator[None]:
    """Python's automatic collection off (gc.collect still works), so that a full collection
    of its own, left due by an earlier test's garbage, cannot be counted as ours."""
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


def test_between_keys_collects_in_full_once_the_last_one_is_old_enough(
    only_asked_collections: None, full_collections: list[int]
) -> None:
    CycleCollector(every=3600).between_keys(busy=False)
    assert full_collections == []
    CycleCollector(every=0).between_keys(busy=True)
    assert full_collections == [1]


def test_a_pass_over_everything_owes_a_full_collection_at_the_next_idle_moment(
    only_asked_collections: None, full_collections: list[int]
) -> None:
    collector = CycleCollector(every=3600)
    with collector.during_pass(focused=True):
        pass
    collector.between_keys(busy=False)
    assert full_collections == []  # a repair owes nothing
    before = gc.get_threshold()
    with collector.during_pass(focused=False):
        assert gc.get_threshold() == before  # Python's own schedule
    collector.between_keys(busy=True)
    assert full_collections == []  # keys are waiting: their repairs come first
    collector.between_keys(busy=False)
    assert full_collections == [1]
    collector.between_keys(busy=False)
    assert full_collections == [1]  # paid once


def test_a_failed_pass_over_everything_owes_one_too(
    only_asked_collections: None, full_collections: list[int]
) -> None:
    collector = CycleCollector(every=3600)
    with pytest.raises(RuntimeError), collector.during_pass(focused=False):
        raise RuntimeError("the pass failed halfway")
    collector.between_keys(busy=False)
    assert full_collections == [1]


def test_a_focused_pass_defers_pythons_own_full_collections() -> None:
    before = gc.get_threshold()
    with CycleCollector().during_pass(focused=True):
        assert gc.get_threshold()[2] > before[2]
    assert gc.get_threshold() == before
