"""The mount namespace the OCI runtime runs in on a hybrid cgroup host (kernel.oci), pinned
once and entered by every start; and the propagation of our own mount points into it.

Pinned as `ip netns` pins network namespaces: a bind mount of the namespace's nsfs file
(`unshare --mount=PIN`), on a private mount point of ours (the kernel refuses one under a
shared mount: it could propagate into the namespace it pins). Entering it (`nsenter
--mount=PIN`) copies nothing. A fresh namespace per start (`unshare --mount`) copied the whole
mount table, one root and one network namespace per container (2,000 mounts at 1,000
containers: ~7-20 ms a copy against ~2 ms on a bare host), and each stayed alive beside its
container as a slave of ours, so every later mount and unmount below a shared mount was
repeated in each of them (measured at 1,000 containers: 17 ms for a mount + unmount under our
shared containers directory, 3.7 ms under a private one).

The pinned namespace is a slave copy of ours: mounts made later below a shared mount reach it,
others do not. A whole pass compares it with ours (`state`) and pins a fresh one when they
differ; the old one lives on, unpinned, while runtime processes are still in it. A focused
pass only makes sure one is pinned: the comparison costs ~10 ms at 1,000 containers.

It is kept lean: the runtime copies its whole mount table into each container's new namespace
and unmounts it there again (at 1,000 containers, our 2,026 mounts: ~15.6 ms a copy against
~2.6 ms for the 25 it holds lean, measured with `unshare -m`). So its `Setup` unmounts in it what the
runtime reaches otherwise (the sandboxes' namespace files, opened through our own root) and the
roots already mounted below the carried directories; a root mounted later reaches it and is
let go once its container has started (kernel.oci).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from kernel import crashpoints
from kernel.libc import LIBC, MNT_DETACH, checked
from kernel.mountinfo import MOUNTINFO, Mount, escape, mount_at, mounts

MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE, MS_SHARED = 0x1000, 0x2000, 0x4000, 0x40000, 0x100000


class MountNamespaceError(Exception):
    pass


def _check(result: int, what: str) -> None:
    checked(result, what, MountNamespaceError)


def ensure_own_mount(directory: Path, shared: bool) -> None:
    """Make `directory` a mount point of its own: shared in a peer group of its own (what is
    mounted or unmounted below it then reaches the runtime's namespace: a root we unmount goes
    away there too, instead of staying alive with its layers), or private (to pin a namespace
    in). A run killed half-way through is finished by the next."""
    directory.mkdir(parents=True, exist_ok=True)
    path = str(directory).encode()
    current = _propagation(directory)
    if current is None:
        _check(LIBC.mount(path, path, None, MS_BIND | MS_REC, None), f"bind {directory} on itself")
    if current is None or current != shared:
        _check(LIBC.mount(None, path, None, MS_PRIVATE, None), f"make {directory} private")
        if shared:
            _check(LIBC.mount(None, path, None, MS_SHARED, None), f"make {directory} shared")


def _propagation(directory: Path, table: str | None = None) -> bool | None:
    """Whether `directory` is a shared mount point; None when it is no mount point at all."""
    tags = _tags(directory, MOUNTINFO.read_text() if table is None else table)
    return None if tags is None else any(tag.startswith("shared:") for tag in tags)


def _tags(directory: Path, table: str) -> tuple[str, ...] | None:
    """The propagation of the mount in effect at `directory` in a mount table (shared:N,
    master:N, ...); None when it is no mount point there."""
    mount = mount_at(str(directory.resolve()), table)
    return None if mount is None else mount.propagation


def _reaches(directory: Path, ours: str, inside: str) -> bool:
    """What is mounted below `directory` reaches the pinned namespace: it is a shared mount
    point of ours, and the pinned namespace's copy of it a slave of that peer group."""
    groups = [tag.removeprefix("shared:") for tag in _tags(directory, ours) or () if tag.startswith("shared:")]
    return bool(groups) and f"master:{groups[0]}" in (_tags(directory, inside) or ())


class PinState(Enum):
    ABSENT = "absent"
    CURRENT = "current"
    STALE = "stale"
    """Pinned, but lagging ours: a mount made (or unmounted) since below a private mount."""
    LEFT = "left"
    """Not pinned, but a pin beside it (a run killed before its move) or a mount point pinning
    made of our own directories is left (by a release of an earlier version, or a run killed
    during one): a release takes them away."""


@dataclass(frozen=True)
class Setup:
    """What a namespace being pinned gets, inside it, before it is pinned."""

    covered: tuple[Path, ...] = ()
    """Files /dev/null is bound over (the namespace's own mounts)."""
    dropped: tuple[Path, ...] = ()
    """Directories unmounted in it with everything below them (reached another way)."""

    def left_out(self, pin: Path, carried: Collection[Path]) -> tuple[set[str], tuple[str, ...]]:
        """The mount points two tables need not agree on: (points, prefixes of points below
        which none count), as mountinfo writes them. Below a carried directory: a root is let
        go by the pinned namespace once its container has started."""
        points = {_written(point) for point in (pin, *self.covered, *self.dropped)}
        return points, tuple(_written(directory) + "/" for directory in (*self.dropped, *carried))


def _written(path: Path) -> str:
    """A path as mountinfo names it: resolved (our state dir may be given through a symlink or
    relative), escaped."""
    return escape(str(path.resolve()))


def state(pin: Path, setup: Setup, carried: Collection[Path], ours: str | None = None) -> PinState:
    """Whether `pin` holds a namespace that shows what ours shows, apart from what its `setup`
    changed in it (and the pin itself) and the roots below the `carried` directories, and of
    which each `carried` directory is a slave of our shared one (what is mounted below it
    reaches the pinned namespace). Costs a read of both mount tables (~4 ms each at 2,000
    mounts). Whether its setup dropped what it could is not asked: a mount below a dropped
    directory may be out of reach of any path, in ours as in it (a tmpfs mounted over /run
    hides /run/netns's), and one pinned by an earlier release, before it was kept lean, works
    as well, only slower, until it is pinned afresh. `ours`: our mount table, when the caller
    has just read it (theirs is read right after)."""
    ours = MOUNTINFO.read_text() if ours is None else ours
    if not is_pinned(pin):
        left = is_pinned(_staging(pin)) or _own_mounts(pin, carried, ours)
        return PinState.LEFT if left else PinState.ABSENT
    inside = _read_inside(pin)
    points, below = setup.left_out(pin, carried)
    current = all(_reaches(directory, ours, inside) for directory in carried) and \
        _table(inside, points, below) == _table(ours, points, below)
    return PinState.CURRENT if current else PinState.STALE


def pin(pin: Path, setup: Setup, carried: Collection[Path]) -> None:
    """Pin a fresh slave copy of our mount namespace at `pin`, after `setup` in it and the
    unmounting of what is below each `carried` directory there, once each is a shared mount
    point of ours (before anything is mounted below it: a mount under a private parent stays
    private). It is pinned beside `pin` first and moved there once set up, so what is pinned
    at `pin` is always whole, whenever a run is killed. One pinned there before is let go (it
    lives on while processes are in it)."""
    crashpoints.step("pin-mount-namespace")
    for directory in carried:
        ensure_own_mount(directory, shared=True)
    ensure_own_mount(pin.parent, shared=False)
    staging = _staging(pin)
    _unpin(staging)  # a run killed before the move left one
    staging.touch()
    unshare = ["unshare", f"--mount={staging}", "--propagation", "slave", *_setup_command(setup, carried)]
    # The kernel refuses to pin a namespace whose id is not above the pinning process's own (a
    # loop check), and 6.18 hands ids out in per-CPU batches (measured: namespaces made on CPU 1
    # numbered ~3,000 below those made at the same time on CPU 0). From a nested namespace (a
    # test's, a benchmark's) a CPU whose batch is behind can then be refused: the one whose
    # batch numbered ours is not. unshare pins before it runs the setup: a failed one is let go.
    for cpus in ([], *(["taskset", "--cpu-list", str(cpu)] for cpu in sorted(os.sched_getaffinity(0)))):
        proc = subprocess.run([*cpus, *unshare], capture_output=True, text=True)
        if proc.returncode == 0:
            break
        _unpin(staging)
    else:
        raise MountNamespaceError(f"pin a mount namespace at {pin}: {proc.stderr.strip()}")
    _unpin(pin)
    pin.touch()
    _check(LIBC.mount(str(staging).encode(), str(pin).encode(), None, MS_MOVE, None), f"move the pin to {pin}")


def release(pin: Path, carried: Collection[Path]) -> None:
    """Unpin: the namespace goes once no process is left in it; and one a run killed before
    its move left beside it. Then the mount points `pin` made of our directories (the pin's and
    each `carried` one) go, once nothing is mounted below them: the host's table is then as it
    was before the first pin."""
    _unpin(pin)
    _unpin(_staging(pin))
    for directory in _own_mounts(pin, carried, MOUNTINFO.read_text()):
        _check(LIBC.umount2(str(directory).encode(), MNT_DETACH), f"unmount {directory}")


def _own_mounts(pin: Path, carried: Collection[Path], table: str) -> list[Path]:
    """Of the pin's directory and the `carried` ones, those `ensure_own_mount` bound on
    themselves, with nothing mounted below them (nothing of theirs is hidden by a detach)."""
    found = list(mounts(table))
    in_effect = {mount.point: mount for mount in found}  # the last one stacked at each point
    by_id = {mount.id: mount for mount in found}
    resolved = {directory: str(directory.resolve()) for directory in (*carried, pin.parent)}
    return [directory for directory, path in resolved.items()
            if (mount := in_effect.get(path)) is not None and _self_bound(mount, by_id.get(mount.parent))
            and not any(other.point.startswith(f"{path}/") for other in found)]


def _self_bound(mount: Mount, parent: Mount | None) -> bool:
    """A bind of the directory on itself: of its parent mount's filesystem, showing what the
    parent shows there. One of another filesystem (a disk the host's owner mounted there) is
    not ours; nor is a bind of another directory."""
    if parent is None:
        return False
    below = mount.point.removeprefix(parent.point.rstrip("/"))
    return mount.device == parent.device and mount.root == parent.root.rstrip("/") + below


def _staging(pin: Path) -> Path:
    return pin.with_name(pin.name + ".new")


def _unpin(pin: Path) -> None:
    while is_pinned(pin):  # every one stacked there
        _check(LIBC.umount2(str(pin).encode(), MNT_DETACH), f"unpin {pin}")


def is_pinned(pin: Path) -> bool:
    """`pin` is a namespace file bound there (nsfs: the device of our own namespace files)."""
    try:
        return os.stat(pin).st_dev == os.stat("/proc/self/ns/mnt").st_dev
    except FileNotFoundError:
        return False


def _read_inside(pin: Path) -> str:
    """The mount table as a process in the pinned namespace sees it."""
    proc = subprocess.run(["nsenter", f"--mount={pin}", "cat", "/proc/self/mountinfo"], capture_output=True,
                          text=True)
    return proc.stdout if proc.returncode == 0 else ""


def _table(text: str, points: Collection[str], below: tuple[str, ...]) -> set[tuple[str, str, str]]:
    """What two namespaces' tables must agree on: each mount's filesystem, the part of it shown
    and where, as the kernel writes them (escaped; propagation differs: the copies are slaves
    of ours), but at `points` and below the prefixes `below`. Split, not parsed: a table holds
    a line per root and sandbox."""
    fields = (line.split(" ", 5) for line in text.splitlines())
    return {(f[2], f[3], f[4]) for f in fields if len(f) > 5 and f[4] not in points and not f[4].startswith(below)}


_SETUP = "import sys; sys.path.insert(0, sys.argv[1]); from kernel.mountns import set_up; set_up(sys.argv[2])"
"""Run in the namespace being pinned, isolated (-I: nothing from the working directory or the
environment on the path) but for our own packages."""


def _setup_command(setup: Setup, carried: Collection[Path]) -> list[str]:
    plan = {"covered": [str(p) for p in setup.covered], "dropped": [str(p.resolve()) for p in setup.dropped],
            "emptied": [str(p.resolve()) for p in carried]}
    return [sys.executable, "-I", "-c", _SETUP, str(Path(__file__).resolve().parent.parent), json.dumps(plan)]


def set_up(plan_json: str) -> None:
    """Inside the namespace being pinned: /dev/null over each covered file, then unmount what
    is at or below each dropped directory and below each emptied one, the shallowest first (a
    detached mount takes what is below it along; one stacked on another is unmounted in turn)."""
    plan = json.loads(plan_json)
    for file in plan["covered"]:
        _check(LIBC.mount(b"/dev/null", file.encode(), None, MS_BIND, None), f"bind /dev/null over {file}")
    dropped = tuple(plan["dropped"])
    under = tuple(f"{directory}/" for directory in (*dropped, *plan["emptied"]))
    points = {m.point for m in mounts(MOUNTINFO.read_text()) if m.point in dropped or m.point.startswith(under)}
    for point in sorted(points, key=lambda p: p.count("/")):
        while LIBC.umount2(point.encode(), MNT_DETACH) == 0:
            pass
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
            _check(-1, f"unmount {point}")
