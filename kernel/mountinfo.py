"""/proc/PID/mountinfo fields: the kernel writes space, tab, newline and backslash in paths and
sources as octal escapes (`\\040`); every reader of the file takes them back here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

MOUNTINFO = Path("/proc/self/mountinfo")
"""This process's mount table."""

_ESCAPED = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    return _ESCAPED.sub(lambda match: chr(int(match[1], 8)), field)


def escape(path: str) -> str:
    """A path as the kernel writes it in mountinfo."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


class Mount(NamedTuple):
    """What a mount shows of itself in one namespace's table: the same in every copy of it but
    its IDs (a copy in another namespace gets its own)."""
    device: str
    """major:minor"""
    root: str
    """The directory of its filesystem it shows (a bind mount shows a subdirectory)."""
    point: str
    propagation: tuple[str, ...]
    """shared:N, master:N, propagate_from:N, unbindable (none: private)."""
    id: str
    parent: str
    """The mount's ID and its parent's: this table's own (each copy gets its own)."""
    fstype: str
    """The file system's type (tmpfs, cgroup2, overlay, ...)."""


def mounts(text: str) -> Iterator[Mount]:
    """The mounts of a mountinfo text, in its order (the last one stacked on a point is in effect)."""
    for line in text.splitlines():
        mine, _, filesystem = line.partition(" - ")
        fields = mine.split(" ")
        yield Mount(fields[2], unescape(fields[3]), unescape(fields[4]), tuple(fields[6:]), fields[0], fields[1],
                    filesystem.split(" ", 1)[0])


def mount_at(point: str, table: str) -> Mount | None:
    """The mount in effect at `point` (an absolute path, resolved) in a mount table: the last
    one stacked there; None when it is no mount point. Only the lines that name it are parsed
    (a table holds a line per root and sandbox)."""
    marker = f" {escape(point)} "
    found = None
    for mount in mounts("\n".join(line for line in table.splitlines() if marker in line)):
        if mount.point == point:
            found = mount
    return found
