"""Waiting on the kernel or a container without sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], expected: T, timeout: float = 5.0) -> T:
    """The probe's answer once it is `expected`, or its last answer after `timeout` seconds
    (servers take a moment to bind, processes a moment to die)."""
    deadline = time.monotonic() + timeout
    answer = probe()
    while answer != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = probe()
    return answer
