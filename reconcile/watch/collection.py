"""When the watch agent collects its cyclic garbage in full: not in the middle of a focused
pass (a repair), but between two keys: once idle after a pass over everything, and otherwise
at most every FULL_EVERY seconds.

Why: Python starts a full collection on its own once enough objects have survived into the
oldest generation, whatever the program is doing, and a full collection walks every object
the agent keeps (the stacks' models, the kernel watches, the kept ruleset). At a thousand
containers, measured on a held agent with gc.callbacks: 15-55 ms each, one every few focused
passes; one that landed inside a killed container's repair made it 167 ms instead of ~100.
During a focused pass Python still collects the young generations as it allocates (0.1-6 ms
each, no dearer with more containers); what became old and cyclic waits for the next full
collection, after the key. A pass over everything (a cold start of a thousand containers
allocates far more) keeps Python's own schedule, so its peak memory does not grow, and owes
a full collection at the next idle moment between keys: what it left in cycles is freed (and
given back to the kernel by the worker) at once, not up to FULL_EVERY seconds later (the
agent converging 1,000 containers, read as it went quiet: 70.0-70.3 MiB resident before,
67.5-67.7 after; 66.9-67.1 either way 40 s later).

Python 3.11 and 3.12, whose collector has three generations (Debian 12 has 3.11); on a
Python whose collector ignores the oldest generation's threshold, the deferral does nothing
and the full collections between keys are merely extra.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

FULL_EVERY = 30.0
"""Seconds between two full collections made between keys (as often as the agent's default
resync, whose pass over everything collects on Python's schedule anyway)."""

_NEVER = 2**31 - 1
"""A threshold Python's own collector never reaches for the oldest generation."""


class CycleCollector:
    """The agent worker's: it alone defers and collects (one worker, so deferrals never
    overlap)."""

    def __init__(self, every: float = FULL_EVERY) -> None:
        self._every = every
        self._collected_at = time.monotonic()
        self._owed = False

    @contextmanager
    def during_pass(self, focused: bool) -> Iterator[None]:
        """Around one of the worker's passes: a focused one `deferred`; one over everything on
        Python's schedule, owing a full collection once it is over."""
        if focused:
            with self.deferred():
                yield
            return
        try:
            yield
        finally:
            self._owed = True

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """No full collection of Python's own inside (process-wide: the worker's passes are
        the agent's only heavy allocations)."""
        young, middle, oldest = gc.get_threshold()
        gc.set_threshold(young, middle, _NEVER)
        try:
            yield
        finally:
            gc.set_threshold(young, middle, oldest)

    def between_keys(self, busy: bool) -> None:
        """A full collection, when one is owed and no key waits, or when the last one made here
        is FULL_EVERY seconds old; while keys are waiting (`busy`: the collection would only
        delay their repairs) up to twice that."""
        if (self._owed and not busy) or time.monotonic() - self._collected_at >= self._every * (2 if busy else 1):
            gc.collect()
            self._collected_at = time.monotonic()
            self._owed = False
