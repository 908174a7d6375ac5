"""One writer at a time: applies and teardowns of any stack serialize on a file lock.

A global lock (rather than one per stack) because validation crosses stacks: two stacks
applied at once could each pass the subnet-overlap check against the other's old state.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "lock"  # DO NOT RENAME: concurrent versions must agree on it
IMAGES_LOCK_NAME = "images.lock"  # DO NOT RENAME: writers of the image store (state.images)
"""A second lock, for the image store alone: pulls take it shared (side by side; the store's
own files keep them apart, state.images), what deletes from the store exclusive; not the state
dir's lock, so the watch agent repairs other keys while it pulls. Taken after LOCK_NAME when
both are held."""
AGENT_LOCK_NAME = "watch.lock"  # DO NOT RENAME: `status` of any version reads it
"""Held shared by every running watch agent of the state dir for as long as it runs (and
released by the kernel when it dies, however): `status` tells its rows of a stopped agent."""
AWAITED = {LOCK_NAME: "another reconcile", IMAGES_LOCK_NAME: "the image pulls under way"}
"""Whom a wait for the lock (exclusive) waits for, as the waiting line says it."""
SHARED_AWAITED = "an image removal"
"""Whom a shared taker waits for: only an exclusive holder (removals alone take it so)."""


def _say_waiting(awaited: str) -> Callable[[str], None]:
    def say(holder: str) -> None:
        print(f"waiting for {awaited} (pid {holder}) to finish...", file=sys.stderr)
    return say


@contextmanager
def exclusive(state_dir: Path, waiting: Callable[[str], None] | None = None,
              name: str = LOCK_NAME) -> Iterator[None]:
    """Hold the state dir's lock (or the image store's: IMAGES_LOCK_NAME); if another process
    holds it, say so (`waiting` gets the holder's pid: the watch agent logs it as JSON) and wait."""
    with _held(state_dir, name, fcntl.LOCK_EX, waiting or _say_waiting(AWAITED[name])):
        yield


@contextmanager
def shared(state_dir: Path, waiting: Callable[[str], None] | None = None,
           name: str = IMAGES_LOCK_NAME) -> Iterator[None]:
    """Hold the lock alongside any other shared holder; wait (saying so) while it is held
    exclusive."""
    with _held(state_dir, name, fcntl.LOCK_SH, waiting or _say_waiting(SHARED_AWAITED)):
        yield


@contextmanager
def _held(state_dir: Path, name: str, operation: int, waiting: Callable[[str], None]) -> Iterator[None]:
    """The lock file holds its last taker's pid on its first line, for whoever waits next. A
    shared taker writes its line over the start of the file without truncating it (another
    holder may be reading it): each write of a whole line at offset 0 is atomic, so the first
    line is always one whole pid."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").partition("\n")[0].strip() or "unknown"
            waiting(holder)
            fcntl.flock(fd, operation)
        if operation == fcntl.LOCK_EX:
            os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def held(state_dir: Path, name: str) -> bool:
    """Whether some process holds the lock now, shared or exclusive (a look that waits for
    nothing and holds it for no longer than the look)."""
    try:
        fd = os.open(state_dir / name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class Flock:
    """An exclusive flock of one file (made if missing, never removed here), taken and let go
    by hand; it dies with its process. Two takers in one process exclude each other too (each
    opens the file anew: flocks belong to open files)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def take(self, wait: bool = True) -> bool:
        """Hold it (waiting without a word, or not at all: False when another holds it)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Flock(path) held for a short section of one writer at a time."""
    lock = Flock(path)
    lock.take()
    try:
        yield
    finally:
        lock.release()
