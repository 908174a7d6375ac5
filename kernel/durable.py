"""Writes that survive a power cut whole or not at all.

A file is written to a private temporary file beside the target, flushed, renamed over it and
the rename flushed; a reader (or a process after a power cut) sees the old file, no file, or
the whole new one, never a part. A directory tree (an unpacked layer, a seeded volume) is
filled under a temporary name, its filesystem synced, and renamed into place without replacing
one that a concurrent writer placed first; then the rename is flushed."""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from pathlib import Path

from kernel.libc import LIBC

AT_FDCWD, RENAME_NOREPLACE = -100, 1


def write_durably(path: Path, data: bytes, temporary_prefix: str) -> None:
    """Write `data` to `path` so. The temporary file's name starts with `temporary_prefix` (so
    whoever cleans the directory can tell a killed writer's leftover); it is removed when the
    write fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Flush the directory's entries: the file's own fsync flushes its data, not the name a
    rename gave it, so without this a power cut can bring back the old name, or none."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(fd: int) -> None:
    """Flush the whole filesystem holding `fd` (a tree filled under a temporary name) before a
    rename gives the tree its final name: after a power cut a tree under that name must be
    whole, as nothing fills it again. One syncfs costs far less than an fsync per file."""
    if LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def rename_noreplace(source: Path, target: Path) -> bool:
    """Rename, or False when `target` exists. RENAME_NOREPLACE, because a plain rename(2)
    silently replaces an empty directory a concurrent writer placed (a layer overlay mounts may
    already use, a volume a container may already write into)."""
    if LIBC.renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    raise OSError(err, os.strerror(err), str(target))
