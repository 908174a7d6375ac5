"""kernel.beside: work in a forked child, its result read back, or the work run here instead."""

from __future__ import annotations

import array
import fcntl
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from kernel.beside import Beside, beside, may_fork
from tests.waiting import eventually

pytestmark = pytest.mark.single_threaded


@pytest.fixture(autouse=True)
def _single_threaded() -> None:
    if not may_fork():  # a plugin's thread would make every test here run the work in turn
        pytest.fail(f"the test process has threads: {os.listdir('/proc/self/task')}")


def _child_of(pending: Beside[object]) -> int:
    assert pending._pid > 0, "no child was forked"
    return pending._pid


def test_the_result_comes_from_a_child() -> None:
    with beside(lambda: (os.getpid(), {"sandboxes": list(range(1000))})) as pending:
        pid, payload = pending.result()
    assert pid != os.getpid()
    assert payload == {"sandboxes": list(range(1000))}


def test_a_result_larger_than_a_pipe_buffer() -> None:
    big = os.urandom(3 << 20)
    with beside(lambda: (os.getpid(), big)) as pending:
        pid, payload = pending.result()
    assert pid != os.getpid()
    assert payload == big


def test_a_failure_in_the_child_is_raised_here_by_running_the_work_again() -> None:
    calls: list[int] = []

    def work() -> int:
        calls.append(os.getpid())
        raise LookupError(f"failed in {os.getpid()}")

    with beside(work) as pending, pytest.raises(LookupError, match=f"failed in {os.getpid()}$"):
        pending.result()
    assert calls == [os.getpid()]  # the child's call appended to the child's copy


def test_the_fallback_is_the_callers_own_when_given() -> None:
    def work() -> str:
        raise LookupError("not in the child")

    with beside(work, here=lambda: f"here {os.getpid()}") as pending:
        assert pending.result() == f"here {os.getpid()}"


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

    with beside(work) as pending:
        child = _child_of(pending)
        eventually(started.exists, True)
        os.kill(child, signal.SIGKILL)
        assert pending.result() == os.getpid()


def test_an_answer_cut_short_is_no_answer() -> None:
    """The child is killed while it writes (the pipe full, the parent not yet reading): what
    arrived is a part of the payload, which the length before it tells apart."""
    big = os.urandom(3 << 20)
    with beside(lambda: (os.getpid(), big)) as pending:
        child = _child_of(pending)
        eventually(lambda: _waiting_in_pipe(pending._pipe) >= 4096, True)
        os.kill(child, signal.SIGKILL)
        pid, payload = pending.result()
    assert pid == os.getpid()
    assert payload == big


def test_a_ctrl_c_is_left_to_the_caller() -> None:
    def work() -> int:
        time.sleep(0.3)
        return os.getpid()

    with beside(work) as pending:
        child = _child_of(pending)
        time.sleep(0.1)
        os.kill(child, signal.SIGINT)  # as the terminal sends it to the whole process group
        assert pending.result() == child


def test_leaving_early_stops_and_reaps_the_child(tmp_path: Path) -> None:
    started = tmp_path / "started"

    def work() -> None:
        started.touch()
        time.sleep(60)

    with pytest.raises(RuntimeError), beside(work) as pending:
        child = _child_of(pending)
        eventually(started.exists, True)
        raise RuntimeError("the caller's own work failed")
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # reaped: no zombie left
    pending.close()  # a second close does nothing


def test_the_child_flushes_nothing_of_the_callers() -> None:
    """Buffered output and exit handlers stay the caller's: a child that ran them would print
    the caller's unwritten output a second time."""
    script = ("import atexit, os, sys\n"
              "from kernel.beside import beside\n"
              "atexit.register(lambda: print('exit handler'))\n"
              "sys.stdout.write('written once ')\n"
              "with beside(os.getpid) as pending:\n"
              "    assert pending.result() != os.getpid()\n")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parent.parent)
    assert shown.stdout == "written once exit handler\n"


def test_a_process_with_threads_runs_the_work_itself() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not may_fork()
        with beside(os.getpid) as pending:
            assert pending._pid == 0
            assert pending.result() == os.getpid()
    finally:
        stop.set()
        thread.join()
    eventually(may_fork, True)  # the thread is gone from /proc a moment after join()


def _waiting_in_pipe(pipe: int) -> int:
    """Bytes written into the pipe and not yet read."""
    count = array.array("i", [0])
    fcntl.ioctl(pipe, termios.FIONREAD, count)
    return count[0]
