"""Read-only work run in a forked child beside the caller's own, when the caller may fork.

A whole pass at a thousand containers reads 1,000 network namespaces one at a time (~0.2 s),
1,000 cgroups (~0.07 s; ~0.17 s with their usage for `status`) and the rest of the host
(~0.2 s). Python threads cannot overlap that work (the GIL: `status`'s usage reads in threads
were slower than in one); processes on a second core can. A child hands back its result
pickled through a pipe, after its length (a thousand sandboxes: ~0.27 MB, ~16 ms to read back),
or nothing: then the caller does the work itself, so that a failure is raised in the caller as
it would be without a child, with its own type and traceback (no exception is pickled), and a
child killed halfway through its answer is an answer too short, not a broken one.

Hand-written on `os.fork` rather than `multiprocessing`: that import alone costs ~24 ms of a
CLI run, and its children flush stdio, run exit handlers and print tracebacks, none of which a
child that only reads the kernel may do. Only a process with a single thread forks (a lock held
by another thread at the fork would stay held in the child); the watch agent has several.
SIGINT and SIGTERM wait while the child is forked, so that neither lands in a child still
running the caller's code nor between the fork and the caller learning of the child; a child
ignores SIGINT (a Ctrl-C reaches the whole process group: the caller handles it) and dies with
the caller (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import struct
from collections.abc import Callable, Iterator
from typing import Generic, NoReturn, TypeVar, cast

from kernel.libc import LIBC

T = TypeVar("T")

_LENGTH = struct.Struct("<Q")
_DEFERRED = {signal.SIGINT, signal.SIGTERM}
_PR_SET_PDEATHSIG = 1


def may_fork() -> bool:
    """Whether this process has one thread (the Python ones and any a library started)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


class Beside(Generic[T]):
    """`work` under way in a child once started, unless this process has threads or the fork
    failed; `here` (by default `work`) is what the caller runs when the child gives nothing."""

    def __init__(self, work: Callable[[], T], here: Callable[[], T] | None = None):
        self._work = work
        self._here = here or work
        self._pid = 0
        self._pipe = -1
        self._pidfd = -1

    def start(self) -> None:
        if not may_fork():
            return
        parent = os.getpid()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        try:
            try:
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
            except OSError:  # EMFILE: the caller does it in turn
                return
            try:
                pid = os.fork()
            except OSError:  # EAGAIN, ENOMEM: likewise
                os.close(read_end)
                os.close(write_end)
                return
            if pid == 0:
                os.close(read_end)
                _run_child(self._work, write_end, parent, mask)
            os.close(write_end)
            self._pid, self._pipe = pid, read_end
            with contextlib.suppress(OSError):  # a pidfd signals this child, never a reused pid
                self._pidfd = os.pidfd_open(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def result(self) -> T:
        """The child's result; `here` run in the caller when the child gave none (it failed,
        was killed, or was not started)."""
        if self._pid == 0:
            return self._here()
        payload = self._read_all()
        self.close()
        length = _LENGTH.unpack_from(payload)[0] if len(payload) >= _LENGTH.size else -1
        if length != len(payload) - _LENGTH.size:
            return self._here()
        collecting = gc.isenabled()
        gc.disable()  # a thousand sandboxes' objects at once: no collection in the middle
        try:
            return cast(T, pickle.loads(memoryview(payload)[_LENGTH.size:]))
        except Exception:  # noqa: BLE001 - a result this process cannot read: the caller's turn
            return self._here()
        finally:
            if collecting:
                gc.enable()

    def close(self) -> None:
        """Stop a child whose result is not wanted (the caller failed first) and reap it; a
        second call does nothing."""
        pid, pipe, pidfd = self._pid, self._pipe, self._pidfd
        self._pid, self._pipe, self._pidfd = 0, -1, -1
        if pipe >= 0:
            os.close(pipe)
        if pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        if pid:
            with contextlib.suppress(ChildProcessError):  # reaped already: SIGCHLD ignored
                os.waitpid(pid, 0)

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while chunk := os.read(self._pipe, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)


def _run_child(work: Callable[[], T], pipe: int, parent: int, mask: set[int | signal.Signals]) -> NoReturn:
    """In the child: run `work`, write its pickled result after its length, and leave without
    running anything of the parent's (exit handlers, the store's connection, buffered output).
    Any failure writes nothing: the parent runs the work itself and raises it there."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if os.getppid() == parent:  # else the parent died before the prctl: nobody will read
            gc.disable()  # a collection would touch, and so copy, every page of the parent's heap
            payload = pickle.dumps(work(), pickle.HIGHEST_PROTOCOL)
            with open(pipe, "wb") as out:  # buffered: writes all of it, a pipe's 64 KiB at a time
                out.write(_LENGTH.pack(len(payload)))
                out.write(payload)
            code = 0
    except BaseException:  # noqa: BLE001 - the parent runs the work again and raises it there
        pass
    finally:
        os._exit(code)


@contextlib.contextmanager
def beside(work: Callable[[], T], here: Callable[[], T] | None = None) -> Iterator[Beside[T]]:
    """`work` under way in a child while the caller does its own; the child is stopped and
    reaped however the block ends."""
    pending = Beside(work, here)
    try:
        pending.start()
        yield pending
    finally:
        pending.close()
