"""Numbered steps at every write to the kernel or the state store, so a test can SIGKILL a run
at exactly step N (RECONCILE_CRASH_AT=N) instead of guessing with sleeps, and can learn how many
steps a run takes (RECONCILE_STEP_LOG=path gets one label per line). Both are read once at
import; with neither set a step costs one comparison."""

from __future__ import annotations

import os
import signal
import threading

_CRASH_AT = int(os.environ.get("RECONCILE_CRASH_AT") or 0)
_STEP_LOG = os.environ.get("RECONCILE_STEP_LOG") or ""
_lock = threading.Lock()
_count = 0


def step(label: str) -> None:
    """Mark that a write is about to happen; with the crash point set, step N never returns."""
    if not (_CRASH_AT or _STEP_LOG):
        return
    global _count
    with _lock:  # container starts run in parallel threads: each step gets its own number
        _count += 1
        if _STEP_LOG:
            with open(_STEP_LOG, "a") as log:
                log.write(f"{_count} {label}\n")
        if _count == _CRASH_AT:
            os.kill(os.getpid(), signal.SIGKILL)
