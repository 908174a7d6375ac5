"""Retrying a kernel call that can lose a race (an interrupted dump, EBUSY): the first try is
a plain call, and only a transient failure hands the call to tenacity's bounded retry.

Why not tenacity's decorator alone: it builds its retry state and a Future around every call,
~50 us each, and the calls retried here are the hot ones (a netlink dump per table per
namespace, an rmdir per cgroup level per hierarchy): that was more than the calls themselves.
tenacity itself is imported on the first retry (~15 ms of every CLI start otherwise).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def retry_transient(transient: Callable[[BaseException], bool], *, first_wait: float, max_wait: float,
                    within: float | None = None, attempts: int | None = None
                    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry while `transient(exc)`, with exponential waits from `first_wait` up to `max_wait`,
    for at most `within` seconds after the first failure, or `attempts` tries in all (the first
    included); then the last error is raised."""
    if (within is None and attempts is None) or (attempts is not None and attempts < 2):
        raise TypeError("retry_transient needs a time limit (within) or at least two attempts")

    def decorate(call: Callable[P, R]) -> Callable[P, R]:
        def retried(*args: P.args, **kwargs: P.kwargs) -> R:
            from tenacity import (
                retry,
                retry_if_exception,
                stop_after_attempt,
                stop_after_delay,
                stop_any,
                wait_exponential,
            )

            stop = stop_any(*([] if within is None else [stop_after_delay(within)]),
                            *([] if attempts is None else [stop_after_attempt(attempts - 1)]))
            retrying = retry(retry=retry_if_exception(transient), stop=stop,
                             wait=wait_exponential(multiplier=first_wait, max=max_wait), reraise=True)
            return retrying(call)(*args, **kwargs)

        @functools.wraps(call)
        def first_try(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return call(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - re-raised unless it is worth another try
                if not transient(exc):
                    raise
            return retried(*args, **kwargs)
        return first_try
    return decorate
