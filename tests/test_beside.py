"""kernel.beside: work in a forked child, its result read back, or the work run here instead."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from kernel.beside import Beside, beside, may_fork
from tests.waiting import eventually


@pytest.fixture(autouse=True)
def _single_threaded() -> None:
    if not may_fork():  # a plugin's thread would make every test here run the work in turn
        pytest.fail(f"the test process has threads: {os.listdir('/proc/self/task')}")


def test_the_result_comes_from_a_child() -> None:
    with beside(lambda: (os.getpid(), {"sandboxes": list(range(1000))})) as pending:
        pid, payload = pending.result()
    assert pid != os.getpid()
    assert payload == {"sandboxes": list(range(1000))}


def test_a_result_larger_than_a_pipe_buffer() -> None:
    big = os.urandom(3 << 20)
    with beside(lambda: big) as pending:
        assert pending.result() == big


def test_a_failure_in_the_child_is_raised_here_by_running_the_work_again() -> None:
    calls: list[int] = []

    def work() -> int:
        calls.append(os.getpid())
        raise LookupError(f"failed in {os.getpid()}")

    with beside(work) as pending, pytest.raises(LookupError, match=f"failed in {os.getpid()}$"):
        pending.result()
    assert calls == [os.getpid()]  # the child's call appended to the child's copy


def test_a_result_that_cannot_be_pickled_is_made_here() -> None:
    with beside(lambda: (os.getpid(), threading.Lock())) as pending:
        pid, lock = pending.result()
    assert pid == os.getpid()
    assert lock.acquire(blocking=False)


def test_a_child_killed_before_it_answers_leaves_the_work_to_the_caller(tmp_path: Path) -> None:
    started = tmp_path / "started"

    def work() -> int:
        if not started.exists():  # the child: signal the test, then wait to be killed
            started.touch()
            time.sleep(60)
        return os.getpid()

    pending = Beside(work)
    eventually(started.exists, True)
    os.kill(pending._pid, signal.SIGKILL)
    assert pending.result() == os.getpid()


def test_leaving_early_stops_and_reaps_the_child(tmp_path: Path) -> None:
    started = tmp_path / "started"

    def work() -> None:
        started.touch()
        time.sleep(60)

    with pytest.raises(RuntimeError), beside(work) as pending:
        child = pending._pid
        eventually(started.exists, True)
        raise RuntimeError("the caller's own work failed")
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # reaped: no zombie left


def test_a_process_with_threads_runs_the_work_itself() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not may_fork()
        with beside(os.getpid) as pending:
            assert pending.result() == os.getpid()
    finally:
        stop.set()
        thread.join()
    eventually(may_fork, True)  # the thread is gone from /proc a moment after join()
