"""Read-only work run in a forked child beside the caller's own, when the caller may fork.

A whole pass at a thousand containers reads 1,000 network namespaces one at a time (~0.2 s),
1,000 cgroups (~0.07 s; ~0.17 s with their usage for `status`) and the rest of the host
(~0.2 s). Python threads cannot overlap that work (the GIL: `status`'s usage reads in threads
were slower than in one); processes on a second core can. A child hands back its result
pickled through a pipe (a thousand sandboxes: ~0.27 MB, ~16 ms to read back), or nothing: then
the caller runs the work itself, so that a failure is raised in the caller as it would be
without a child, with its own type and traceback (no exception is pickled).

Hand-written on `os.fork` rather than `multiprocessing`: that import alone costs ~24 ms of a
CLI run, and its children flush stdio, run exit handlers and print tracebacks, none of which a
child that only reads the kernel may do. Only a process with a single thread forks (a lock held
by another thread at the fork would stay held in the child); the watch agent has several and
runs the work in turn.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast

T = TypeVar("T")


def may_fork() -> bool:
    """Whether this process has one thread (the Python ones and any a library started)."""
    return len(os.listdir("/proc/self/task")) == 1


class Beside(Generic[T]):
    """`work` under way in a child, or not started (this process has threads, or fork failed)."""

    def __init__(self, work: Callable[[], T]):
        self._work = work
        self._pid = 0
        self._pipe = -1
        if not may_fork():
            return
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            self._pid = os.fork()
        except OSError:  # EAGAIN, ENOMEM: the caller runs it in turn
            os.close(read_end)
            os.close(write_end)
            return
        if self._pid == 0:
            os.close(read_end)
            _run_child(work, write_end)
        os.close(write_end)
        self._pipe = read_end

    def result(self) -> T:
        """The child's result; the work run here when the child gave none (it failed, or was
        killed), or was not started."""
        if self._pid == 0:
            return self._work()
        payload = self._read_all()
        self.close()
        if payload:
            gc.disable()  # a thousand sandboxes' objects at once: no collection in the middle
            try:
                return cast(T, pickle.loads(payload))
            finally:
                gc.enable()
        return self._work()

    def close(self) -> None:
        """Stop a child whose result is not wanted (the caller failed first) and reap it."""
        if self._pid == 0:
            return
        os.close(self._pipe)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        os.waitpid(self._pid, 0)
        self._pid = 0

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while chunk := os.read(self._pipe, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)


def _run_child(work: Callable[[], T], pipe: int) -> None:
    """In the child: run `work`, write its pickled result, and leave without running anything of
    the parent's (exit handlers, the store's connection, buffered output). Any failure writes
    nothing: the parent runs the work itself and raises it there. SIGINT is the parent's to
    handle (a Ctrl-C reaches the whole process group)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        gc.disable()  # a collection would touch, and so copy, every page of the parent's heap
        payload = pickle.dumps(work(), pickle.HIGHEST_PROTOCOL)
        with open(pipe, "wb") as out:  # buffered: writes all of it, a pipe's 64 KiB at a time
            out.write(payload)
    except BaseException:  # noqa: BLE001 - the parent runs the work again and raises it there
        pass
    finally:
        os._exit(0)


@contextlib.contextmanager
def beside(work: Callable[[], T]) -> Iterator[Beside[T]]:
    """`work` under way in a child while the caller does its own; the child is reaped however
    the block ends."""
    pending = Beside(work)
    try:
        yield pending
    finally:
        pending.close()
