"""Paths inside a container's root, looked at from the host before it starts: symlinks are
resolved against that root (an absolute link means the container's /, never the host's), so a
missing program is a clear error at apply instead of an init that exits 127."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from pathlib import Path

MAX_LINKS = 40  # as the kernel's ELOOP limit


def resolve(root: Path, path: str) -> Path | None:
    """`path` (absolute, in the container) as a host path under `root`, symlinks followed inside
    the root; None if a component is missing or the links loop."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = root.joinpath(*current, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            hops += 1
            if hops > MAX_LINKS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current.append(part)
    return root.joinpath(*current)


def find_program(root: Path, program: str, search_path: str, mounted: Sequence[str] = ()) -> bool:
    """Whether the runtime will find `program` as the container's PATH lookup would. Anything
    under `mounted` (volume targets) is only there once the container runs: taken on trust."""
    if "/" in program:
        candidates = [posixpath.normpath(posixpath.join("/", program))]
    else:
        candidates = [posixpath.join(d or "/", program) for d in search_path.split(":")]
    for candidate in candidates:
        if any(candidate == m or candidate.startswith(m.rstrip("/") + "/") for m in mounted):
            return True
        found = resolve(root, candidate)
        if found is not None and found.is_file() and os.access(found, os.X_OK):
            return True
    return False
