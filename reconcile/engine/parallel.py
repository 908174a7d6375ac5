"""Calls run side by side, a bounded number at once, each one's outcome kept apart: what
`apply` fetches its images with."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def run_all(calls: Mapping[K, Callable[[], V]], limit: int) -> dict[K, V | Exception]:
    """Each call's result, or the exception it raised (one failing stops none of the others),
    at most `limit` running at once. The calling thread is one of the runners; the others are
    daemon threads, so a Ctrl-C (raised in the calling thread) ends the process without waiting
    for them (the pulls' skopeo dies with its thread, its parent)."""
    pending = list(calls.items())
    outcomes: dict[K, V | Exception] = {}
    lock = threading.Lock()

    def runner() -> None:
        while True:
            with lock:
                if not pending:
                    return
                key, call = pending.pop(0)
            try:
                outcome: V | Exception = call()
            except Exception as error:  # noqa: BLE001 - handed to the caller, beside the others' outcomes
                outcome = error
            with lock:
                outcomes[key] = outcome

    helpers = [threading.Thread(target=runner, name="run_all", daemon=True)
               for _ in range(min(limit, len(pending)) - 1)]
    for helper in helpers:
        helper.start()
    runner()
    for helper in helpers:
        helper.join()
    return {key: outcomes[key] for key in calls}
