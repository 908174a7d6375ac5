"""User namespaces for `userns: auto`: a private range of host uids and gids per container
(Podman's --userns=auto), and its root shown with those ids.

The container's uid 0 is host uid `base`; its lower layer (the host's root or a `rootfs`, owned
by host root) is bound once more as an idmapped mount (open_tree + mount_setattr + move_mount,
kernel >= 5.12; overlayfs takes idmapped layers since 5.19) so that inside it belongs to the
container's root and nothing on disk changes. The range is read back from the kernel: the
owner of the container's overlay work directory (chowned to `base` when it is made; the
container cannot reach it) and the uid_map
of its running init, so a lost store loses no range and two containers never share one.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from kernel.libc import LIBC, checked
from specs.names import USERNS_AUTO_IDS

RANGE_SIZE = USERNS_AUTO_IDS
POOL_START = 1 << 30  # far above the ids of any host's own users and of /etc/subuid defaults
POOL_END = (1 << 32) - RANGE_SIZE
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # the same on every architecture
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x4, 0x00100000
USERNS_WAIT = 2.0


class IdmapError(Exception):
    pass


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    return checked(result, what, IdmapError)


def _map_lines(text: str) -> list[tuple[int, int, int]]:
    """(first id inside, first id outside, count) of each line of a /proc/PID/uid_map or gid_map."""
    return [(int(inside), int(outside), int(count))
            for inside, outside, count in (line.split() for line in text.splitlines() if line.strip())]


def base_of_uid_map(text: str) -> int | None:
    """The host uid of a process's uid 0, from /proc/PID/uid_map (None: the host's own ids)."""
    for inside, outside, _ in _map_lines(text):
        if inside == 0:
            return None if outside == 0 else outside
    return None


def base_of_pid(pid: int) -> int | None:
    """The range a running process's user namespace maps uid 0 to (None: the host's own ids,
    or the process is gone)."""
    try:
        return base_of_uid_map(Path(f"/proc/{pid}/uid_map").read_text())
    except OSError:
        return None


def base_of_mark(marked: Path) -> int | None:
    """The range a container's layer was made for: the owner of a directory of ours beside the
    layer that the container cannot reach (its work dir; the upper dir's own owner is the
    container's to change with `chown /`). Only a whole range of the pool counts."""
    try:
        owner = os.lstat(marked).st_uid
    except FileNotFoundError:
        return None
    aligned = owner >= POOL_START and (owner - POOL_START) % RANGE_SIZE == 0 and owner <= POOL_END
    return owner if aligned else None


def host_ranges_of_map(text: str) -> list[tuple[int, int]]:
    """The host ids, as (first, count), that a /proc/PID/uid_map or gid_map maps to; none for
    the host's own namespace (the whole of them mapped to themselves)."""
    ranges = [(outside, count) for _, outside, count in _map_lines(text)]
    return [] if ranges == [(0, (1 << 32) - 1)] else ranges


def host_ranges_of_pid(pid: int) -> list[tuple[int, int]]:
    """Every host uid and gid a running process's user namespace maps (none: the host's own,
    or the process is gone)."""
    ranges: list[tuple[int, int]] = []
    for name in ("uid_map", "gid_map"):
        try:
            ranges += host_ranges_of_map(Path(f"/proc/{pid}/{name}").read_text())
        except OSError:
            return []
    return ranges


def subordinate_ranges(files: Iterable[Path] = (Path("/etc/subuid"), Path("/etc/subgid"))) -> list[tuple[int, int]]:
    """The ranges /etc/subuid and /etc/subgid give users (`user:first:count`): Podman's and
    rootless tools' ids, never handed out to a container of ours."""
    ranges: list[tuple[int, int]] = []
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                ranges.append((int(fields[1]), int(fields[2])))
    return ranges


def allocate(used: Iterable[tuple[int, int]], count: int) -> list[int]:
    """`count` bases from the pool whose ranges overlap none of the `used` ones, (first host
    id, count) each: whatever their length (a foreign namespace may map a million ids)."""
    merged: list[list[int]] = []  # disjoint [low, high) spans, in order
    for low, high in sorted((first, first + size) for first, size in used if size > 0 and first + size > POOL_START):
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    found: list[int] = []
    base, next_span = POOL_START, 0
    while len(found) < count:
        if base > POOL_END:
            raise IdmapError("no free uid range left for userns: auto")
        while next_span < len(merged) and merged[next_span][1] <= base:
            next_span += 1
        if next_span < len(merged) and merged[next_span][0] < base + RANGE_SIZE:
            past = merged[next_span][1] - POOL_START  # the first whole slot past it
            base = POOL_START + -(-past // RANGE_SIZE) * RANGE_SIZE
        else:
            found.append(base)
            base += RANGE_SIZE
    return found


def _userns_fd(base: int) -> int:
    """A user namespace mapping 0..RANGE_SIZE to base..: made by a short-lived process, whose
    namespace outlives it through the fd."""
    holder = subprocess.Popen(["unshare", "--user", "--", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        ours = os.stat("/proc/self/ns/user").st_ino
        deadline = time.monotonic() + USERNS_WAIT
        while os.stat(f"/proc/{holder.pid}/ns/user").st_ino == ours:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise IdmapError("could not make a user namespace")
            time.sleep(0.001)
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{holder.pid}/{name}").write_text(f"0 {base} {RANGE_SIZE}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()
        holder.wait()


def bind_idmapped(source: Path, target: Path, base: int) -> None:
    """Bind `source` (that directory's own mount only, not its submounts) at `target`, its
    files shown as owned by uid - 0 + base."""
    target.mkdir(parents=True, exist_ok=True)
    userns = _userns_fd(base)
    try:
        tree = _check(LIBC.syscall(SYS_OPEN_TREE, AT_FDCWD, str(source).encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
                      f"clone the mount of {source}")
        try:
            # Read-only: an overlay never writes its lower layer, and an `rm -rf` of the state dir
            # that crosses into this bind of the host's root must not delete the host.
            attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, 0, 0, userns)
            _check(LIBC.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                                ctypes.sizeof(attr)), f"idmap {source} (this kernel or filesystem may not allow it)")
            _check(LIBC.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, str(target).encode(), MOVE_MOUNT_F_EMPTY_PATH),
                   f"mount the idmapped {source} on {target}")
        finally:
            os.close(tree)
    finally:
        os.close(userns)
