"""The pure parts of pulls side by side: the bounded runner `apply` fetches its images with
(reconcile.engine.parallel), the image store's shared and exclusive lock and the per-layer
flocks (state.lock)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconcile.engine.parallel import run_all
from state.lock import IMAGES_LOCK_NAME, Flock, exclusive, shared

HOLD = 0.3
"""Seconds a call holds its runner: long enough for the others to start beside it."""


def test_run_all_runs_at_most_its_limit_at_once_and_keeps_every_outcome() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def call(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(HOLD)
        with lock:
            running -= 1
        if n % 2:
            raise ValueError(f"odd {n}")
        return n * 10

    outcomes = run_all({n: (lambda n=n: call(n)) for n in range(7)}, 3)
    assert most == 3
    assert list(outcomes) == list(range(7))  # in the order given, whatever order they ended in
    assert [o for o in outcomes.values() if not isinstance(o, Exception)] == [0, 20, 40, 60]
    assert [str(o) for o in outcomes.values() if isinstance(o, Exception)] == ["odd 1", "odd 3", "odd 5"]


def test_run_all_runs_a_single_call_on_the_calling_thread() -> None:
    assert run_all({"only": threading.current_thread}, 3) == {"only": threading.current_thread()}
    assert run_all({}, 3) == {}


def test_pulls_share_the_image_store_lock_and_a_removal_waits_for_them(tmp_path: Path) -> None:
    """The removal is told a pull's pid: whole, though a pull writes its line over a longer one
    without truncating the file (another holder may be reading it)."""
    (tmp_path / IMAGES_LOCK_NAME).write_text("1234567890\n")
    said: list[str] = []
    with shared(tmp_path), shared(tmp_path):  # two pulls at once (each its own open file)
        took = threading.Event()

        def removal() -> None:
            with exclusive(tmp_path, said.append, name=IMAGES_LOCK_NAME):
                took.set()

        remover = threading.Thread(target=removal)
        remover.start()
        assert not took.wait(HOLD)
        assert said == [str(os.getpid())]  # the pid of a pull under way
    remover.join()
    assert took.is_set()


def test_a_pull_waits_for_a_removal_and_says_so(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(tmp_path / IMAGES_LOCK_NAME)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        took = threading.Event()

        def pull() -> None:
            with shared(tmp_path):
                took.set()

        puller = threading.Thread(target=pull)
        puller.start()
        assert not took.wait(HOLD)
    finally:
        holder.stdin.close()
        holder.wait()
    puller.join()
    assert took.is_set()
    assert f"waiting for an image removal (pid {holder.pid}) to finish..." in capfd.readouterr().err


HOLD_EXCLUSIVE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("held", flush=True)
sys.stdin.read()
"""
"""A removal in another process: holds the image store's lock exclusive until its stdin closes."""


def test_a_layer_flock_is_taken_without_waiting_or_not_at_all(tmp_path: Path) -> None:
    first, second = Flock(tmp_path / "layer"), Flock(tmp_path / "layer")
    assert first.take(wait=False)
    assert not second.take(wait=False)  # the same process, another taker: excluded too
    took = threading.Event()
    waiter = threading.Thread(target=lambda: (second.take(), took.set()))
    waiter.start()
    assert not took.wait(HOLD)
    first.release()
    waiter.join()
    assert took.is_set()
    second.release()
    assert first.take(wait=False)
    first.release()
