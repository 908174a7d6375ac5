"""Removing directory trees whatever their depth.

`shutil.rmtree` recurses (Python 3.11): a tree deeper than the interpreter's recursion limit
(~1,000 levels, 2 KiB of path: `mkdir -p` of `a/a/a/...` in a container's writable layer, or an
image's layer made so) raises RecursionError half-way, past `ignore_errors`, and would stop a
`down`, an image pull or a garbage collection for good. Such a tree is left to coreutils' `rm`
(fts: no recursion), which also stays on the tree's file system. The usual tree is removed
in-process: `rm` costs a process, ~1-2 ms, which a thousand containers' `down` would pay."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path


def remove_tree(path: str | Path, ignore_errors: bool = False, dir_fd: int | None = None) -> None:
    """`shutil.rmtree(path, ignore_errors, dir_fd)`, finished by `rm -rf --one-file-system` where
    the tree is too deep for it. With `dir_fd`, `path` is a name relative to that directory."""
    try:
        shutil.rmtree(path, ignore_errors=ignore_errors, dir_fd=dir_fd)
    except RecursionError:
        # rm resolves the fd through /proc (this process's, not its own), as root may
        where = str(path) if dir_fd is None else f"/proc/{os.getpid()}/fd/{dir_fd}/{path}"
        result = subprocess.run(["rm", "-rf", "--one-file-system", "--", where], capture_output=True, text=True)
        if result.returncode != 0 and not ignore_errors:
            raise OSError(errno.EIO, f"rm failed: {result.stderr.strip()}", str(path)) from None
