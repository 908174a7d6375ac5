"""kernel/retrying.py: a plain first try, then bounded retries of transient failures only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kernel.retrying import retry_transient


class Busy(OSError):
    pass


def failing(times: int, error: Exception) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"
    return calls, call


def transient(exc: BaseException) -> bool:
    return isinstance(exc, Busy)


def test_attempts_count_the_first_try() -> None:
    calls, call = failing(2, Busy())
    assert retry_transient(transient, attempts=3, first_wait=0.001, max_wait=0.001)(call)() == "done"
    assert len(calls) == 3
    calls, call = failing(3, Busy())
    with pytest.raises(Busy):
        retry_transient(transient, attempts=3, first_wait=0.001, max_wait=0.001)(call)()
    assert len(calls) == 3


def test_a_failure_not_transient_is_raised_at_once() -> None:
    calls, call = failing(1, ValueError("bad"))
    with pytest.raises(ValueError):
        retry_transient(transient, attempts=3, within=5.0, first_wait=0.001, max_wait=0.001)(call)()
    assert len(calls) == 1


def test_within_bounds_the_retries_in_time() -> None:
    calls, call = failing(10**6, Busy())
    with pytest.raises(Busy):
        retry_transient(transient, within=0.05, first_wait=0.01, max_wait=0.01)(call)()
    assert 2 <= len(calls) < 20


def test_the_first_bound_reached_stops() -> None:
    calls, call = failing(10**6, Busy())
    with pytest.raises(Busy):
        retry_transient(transient, within=60.0, attempts=4, first_wait=0.001, max_wait=0.001)(call)()
    assert len(calls) == 4


def test_a_retry_without_a_bound_is_refused() -> None:
    with pytest.raises(TypeError):
        retry_transient(transient, first_wait=0.001, max_wait=0.001)
    for attempts in (1, 0):
        with pytest.raises(TypeError):
            retry_transient(transient, attempts=attempts, first_wait=0.001, max_wait=0.001)
        with pytest.raises(TypeError):
            retry_transient(transient, within=1.0, attempts=attempts, first_wait=0.001, max_wait=0.001)
