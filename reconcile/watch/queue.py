"""A keyed, level-triggered work queue (the shape of client-go's workqueue).

Producers add keys, not events: a key added ten times before a worker takes it is reconciled
once, against whatever the kernel shows then. A key being worked on is never handed out twice;
added meanwhile, it comes back once the worker is done. A key may be added for later (a retry
backoff, a crash-loop delay); the earliest time asked for wins. A key that keeps failing is
retried later each time (`backoff`, client-go's per-item exponential rate limiter) until it
succeeds once (`forget`). Each waiting key carries the first reason it was added for, handed
out with it: reasons and keys change together, under one lock, so no reason is lost to a race
between a producer adding a key and the worker finishing it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

RETRY_BASE = 0.2
"""Seconds before the first retry of a failed key; doubled on each failure in a row."""
RETRY_CAP = 60.0
"""The longest a failing key waits between two attempts."""


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[K, int] = {}  # failures in a row, by key, for its retry delay
        self._due: dict[K, float] = {}  # queued key -> when it may be handed out
        self._heap: list[tuple[float, int, K]] = []  # may hold stale entries; _due is the truth
        self._order = itertools.count()
        self._active: set[K] = set()
        self._again: dict[K, float] = {}  # added while active: queued again by done()
        self._added: dict[K, float] = {}  # when each waiting key was last added
        self._reasons: dict[K, str] = {}  # why each waiting key was first added
        self._unobservable: set[K] = set()  # waiting keys drop_stale leaves (see add)
        self._working: dict[K, str] = {}  # why each active key was handed out
        self._closed = False
        self._cond = threading.Condition()

    def add(self, key: K, delay: float = 0.0, reason: str = "", observable: bool = True) -> None:
        """Queue `key`; `reason` is kept if it is its first since it was last handed out.
        `observable=False`: added for something no observation of the kernel shows (an image
        pulled in the background), so no reconcile that observed after it settles it: it is
        handed out whatever drop_stale is told."""
        with self._cond:
            if self._closed:
                return
            now = self._clock()
            self._added[key] = now
            self._reasons.setdefault(key, reason)
            if not observable:
                self._unobservable.add(key)
            due = now + delay
            if key in self._active:
                self._again[key] = min(due, self._again.get(key, due))
                return
            self._push(key, due)

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key, marked active; None on timeout or once closed."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier add
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._added.pop(key, None)
                    self._active.add(key)
                    self._working[key] = self._reasons.pop(key, "")
                    self._unobservable.discard(key)
                    return key
                waits = [t - now for t in (self._heap[0][0] if self._heap else None, deadline) if t is not None]
                if deadline is not None and deadline <= now:
                    return None
                self._cond.wait(min(waits) if waits else None)
            return None

    def done(self, key: K) -> None:
        with self._cond:
            self._active.discard(key)
            self._working.pop(key, None)
            due = self._again.pop(key, None)
            if due is not None and not self._closed:
                self._push(key, due)

    def backoff(self, key: K) -> tuple[int, float]:
        """Count one more failure of `key` in a row: (which attempt failed, the seconds before
        the next), RETRY_BASE doubled per failure up to RETRY_CAP. The caller adds the key with
        that delay."""
        with self._cond:
            attempt = self._failures[key] = self._failures.get(key, 0) + 1
        return attempt, min(RETRY_BASE * 2 ** (attempt - 1), RETRY_CAP)

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts the backoff over."""
        with self._cond:
            self._failures.pop(key, None)

    def due(self, limit: int) -> list[K]:
        """Up to `limit` waiting keys that are due now, earliest first, left in the queue: a
        worker may carry their changes along with its own key's (drop_stale then removes them)."""
        with self._cond:
            now = self._clock()
            ready = sorted((due, key) for key, due in self._due.items() if due <= now)
            return [key for _, key in ready[:limit]]

    def drop_stale(self, covered: Callable[[K], bool], before: float) -> set[K]:
        """Forget waiting keys that `covered` accepts and that nobody added since `before`: a
        reconcile that read the kernel after that moment has seen whatever they were added
        for (above all, the events of its own writes). Returns the keys forgotten."""
        with self._cond:
            stale = {k for k in (*self._due, *self._again)
                     if covered(k) and self._added.get(k, before) < before and k not in self._unobservable}
            for key in stale:
                self._due.pop(key, None)
                self._again.pop(key, None)
                self._added.pop(key, None)
                self._reasons.pop(key, None)
            return stale

    def reason(self, key: K) -> str:
        """Why an active key was handed out, or why a waiting one was first added ("" for none)."""
        with self._cond:
            return self._working[key] if key in self._working else self._reasons.get(key, "")

    def depth(self) -> int:
        """Keys waiting (due or not), for the queue-depth metric."""
        with self._cond:
            return len(self._due) + len(self._again)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _push(self, key: K, due: float) -> None:
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._cond.notify()
