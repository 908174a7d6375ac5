"""Waiting on the kernel or a container without sleeping a fixed time, for as long as this machine
needs: waits are sized for our hosts, and an emulated guest (the VM lane, TCG) runs Python 12-25x
slower, so every deadline is multiplied by TIME_SCALE."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SCALE_ENV = "RECONCILE_TEST_TIME_SCALE"
"""Set to a number to force the scale (e.g. 1 to time a guest like a host)."""

_REFERENCE_SECONDS = 0.002
"""The calibration loop's best time on our 2-core hosts (measured 2.0-2.2 ms under load 3.5)."""

_SLOWER_THAN_NOISE = 4.0
"""A busy host runs the loop up to ~2-3x slower; only a larger factor (an emulated machine) counts,
so deadlines on our hosts stay what they were written as."""


def _calibrate() -> float:
    """How many times slower than our hosts this machine runs Python: the best of five runs of a
    fixed loop (the best, so that a moment of contention does not count)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        total = 0
        for i in range(100_000):
            total += i
        best = min(best, time.perf_counter() - start)
    ratio = best / _REFERENCE_SECONDS
    return round(ratio, 1) if ratio > _SLOWER_THAN_NOISE else 1.0


TIME_SCALE = float(os.environ.get(SCALE_ENV) or _calibrate())


def scaled(seconds: float) -> float:
    """A deadline sized for our hosts, for this machine."""
    return seconds * TIME_SCALE


class StillWaiting(AssertionError):
    """A probe never gave the expected answer: an assertion failure, so that pytest reports the
    last answer seen."""


def eventually(probe: Callable[[], T], expected: T, timeout: float = 5.0) -> T:
    """The probe's answer once it is `expected`, within `timeout` seconds on our hosts (scaled to
    this machine): servers take a moment to bind, processes a moment to die. Raises StillWaiting,
    naming the last answer, when the time is up."""
    deadline = time.monotonic() + scaled(timeout)
    answer = probe()
    while answer != expected:
        if time.monotonic() >= deadline:
            raise StillWaiting(f"after {scaled(timeout):g} s the probe still answers {answer!r}, not {expected!r}")
        time.sleep(0.1)
        answer = probe()
    return answer
