"""Removing directory trees whatever their depth.

`shutil.rmtree` recurses (Python 3.11): a tree deeper than the interpreter's recursion limit
(~1,000 levels, 2 KiB of path: `mkdir -p` of `a/a/a/...` in a container's writable layer, or an
image's layer made so) raises RecursionError half-way, past `ignore_errors`, and would stop a
`down`, an image pull or a garbage collection for good. Such a tree is left to coreutils' `rm`
(fts: no recursion), which also stays on the tree's file system. The usual tree is removed
in-process: `rm` costs a process, ~1-2 ms, which a thousand containers' `down` would pay.

A tree its caller need not wait for (a removed container's files, a recreated one's old layer)
is set aside instead: renamed into a directory of trash at once, and purged by `rm` in a process
of its own at the lowest CPU priority, which outlives its caller, as containerd's overlayfs
snapshotter removes a snapshot's files after the removal has returned (its default,
`sync_remove = false`). On our machines' ext4 (no journal, `discard`) each file with data costs
a synchronous discard as it is deleted: a thousand containers' files took ~1 s of `down`
(bench/README, "Removed containers' files purged after the run")."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
from contextlib import suppress
from pathlib import Path

from kernel import crashpoints


def remove_tree(path: str | Path, ignore_errors: bool = False, dir_fd: int | None = None) -> None:
    """`shutil.rmtree(path, ignore_errors, dir_fd)`, finished by `rm -rf --one-file-system` where
    the tree is too deep for it. With `dir_fd`, `path` is a name relative to that directory."""
    try:
        shutil.rmtree(path, ignore_errors=ignore_errors, dir_fd=dir_fd)
    except RecursionError:
        # rm resolves the fd through /proc (this process's, not its own), as root may
        where = str(path) if dir_fd is None else f"/proc/{os.getpid()}/fd/{dir_fd}/{path}"
        result = subprocess.run(_rm(where), capture_output=True, text=True)
        if result.returncode != 0 and not ignore_errors:
            raise OSError(errno.EIO, f"rm failed: {result.stderr.strip()}", str(path)) from None


def set_aside(path: Path, trash: Path) -> bool:
    """Rename `path` into `trash` (made if missing; on the same mount) under a fresh name, for
    `purge` to delete: gone from `path` at once and whole. False when nothing was at `path`."""
    crashpoints.step("set-aside")
    aside = trash / f"{path.name}-{os.urandom(8).hex()}"  # not uuid: it imports `platform`, 0.25 MiB
    for _ in range(2):
        try:
            os.rename(path, aside)
            return True
        except FileNotFoundError:
            if not os.path.lexists(path):
                return False
            trash.mkdir(mode=0o700, exist_ok=True)  # not there yet, or a purge just deleted it
    os.rename(path, aside)  # a third try, which raises if a purge deleted it yet again
    return True


def purge(trash: Path, lock: Path) -> None:
    """Delete `trash` and everything in it in the background: `rm` at nice 19, detached (a
    session of its own, reparented to init or the nearest subreaper, its working directory `/`),
    one purge at a time: a flock of `lock` (which must outlive `trash`), taken here and handed
    to it, so a run that follows at once leaves its trash to it; or, where a purge holds it,
    waited for (up to 600 s). Whatever is set aside before a purge starts is deleted by it: a
    later purge waits for the one running, whose traversal may have passed it. It stays in the
    caller's cgroups, so it dies where they are killed when the caller ends (a systemd oneshot
    unit); what it leaves, like what a purge that failed leaves, is `purge_left`'s. It has no one
    to report to: what it cannot delete, `purge_left` tells."""
    crashpoints.step("purge")
    with suppress(OSError):
        fd = os.open(lock, os.O_RDONLY)  # inherited: the lock is the purge's until it exits
        try:
            waits = [] if _took(fd) else ["flock", "-w", "600", str(lock)]
            _run(["setsid", "--fork", "nice", "-n", "19", *waits, *_rm(trash)], pass_fds=(fd,))
        finally:
            os.close(fd)


def purge_left(trash: Path, lock: Path) -> str | None:
    """Delete `trash` here and now if it is there and no purge is running (none holds `lock`):
    what a purge cut short or failed left. What cannot be deleted stays for the next run, and
    is told: `rm`'s first complaint, or why it could not run (None when nothing is left, or a
    purge is running)."""
    if not trash.exists():
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot lock {lock}: {exc.strerror}"
    try:
        if not _took(fd):
            return None  # a purge is running: it deletes it
        crashpoints.step("purge")
        complaints = _run(_rm(trash), heard=True)
    except OSError as exc:  # no process to be had (EAGAIN under a tasks limit, ENOMEM)
        return f"cannot run rm: {exc.strerror}"
    finally:
        os.close(fd)
    if not os.path.lexists(trash):
        return None
    more = f" (and {len(complaints) - 1} more)" if len(complaints) > 1 else ""
    return f"{complaints[0] if complaints else 'rm failed'}{more}"


def _rm(path: str | Path) -> list[str]:
    """coreutils' `rm` of a whole tree (fts: no recursion), staying on its file system."""
    return ["rm", "-rf", "--one-file-system", "--", str(path)]


def _took(fd: int) -> bool:
    """Whether this took the exclusive flock of `fd`'s file (False: someone holds it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _run(argv: list[str], pass_fds: tuple[int, ...] = (), heard: bool = False) -> list[str]:
    """Run `argv` from `/`, its output and status unheard; with `heard`, the lines it wrote to
    stderr (not for a command that forks and returns: its child would hold the pipe open)."""
    done = subprocess.run(argv, cwd="/", pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE if heard else subprocess.DEVNULL, text=True, check=False)
    return done.stderr.splitlines() if heard else []
