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
"""A second lock, for the image store alone: a pull takes it, not the state dir's lock, so the
watch agent repairs other keys while it pulls. Taken after LOCK_NAME when both are held."""


def _say_waiting(holder: str) -> None:
    print(f"waiting for another reconcile (pid {holder}) to finish...", file=sys.stderr)


@contextmanager
def exclusive(state_dir: Path, waiting: Callable[[str], None] | None = None,
              name: str = LOCK_NAME) -> Iterator[None]:
    """Hold the state dir's lock (or the image store's: IMAGES_LOCK_NAME); if another process
    holds it, say so (`waiting` gets the holder's pid: the watch agent logs it as JSON) and wait."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            (waiting or _say_waiting)(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
