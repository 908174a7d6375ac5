"""cgroups of containers, on whichever layout the host runs: v1 (a hierarchy per controller) or v2
(the unified tree), told apart at run time from /proc/self/mountinfo.

Paths are always taken from the hierarchy's mount point, never from our own cgroup: the
process running reconcile may itself sit in a non-root cgroup (/proc/self/cgroup), and a
container must not inherit that placement.

Usage: `driver = detect()`, then `driver.missing(limits)` before touching anything,
`driver.create(relpath)` for the cgroup.procs files a new process joins, `driver.write`,
`driver.read` (normalised to the spec's shape; compare with `driver.normalise(relpath, desired)`),
`driver.usage`, `driver.procs`, `driver.remove`, `driver.owned`; `driver.create_everywhere`
for the cgroup of processes that must leave every cgroup of their caller, `driver.usable_cpus`
for the host's CPUs, `driver.remove_parent` once the last cgroup under the parent is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kernel.cgroups_common import CgroupDriver, CgroupError, Limits, Usage
from kernel.cgroups_v1 import CONTROLLERS as V1_CONTROLLERS
from kernel.cgroups_v1 import V1Driver
from kernel.cgroups_v2 import V2Driver
from kernel.mountinfo import MOUNTINFO, mount_at, unescape

__all__ = ["CgroupDriver", "CgroupError", "CgroupMount", "Limits", "Usage", "detect", "parse_mountinfo"]

CGROUP_DIR = PurePosixPath("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
V2_PLACES = (CGROUP_DIR, CGROUP_DIR / "unified")
"""Where a unified tree is mounted: alone (pure v2), or beside v1 hierarchies (hybrid)."""
V2_REQUIRED = frozenset({"memory", "cpu", "pids"})



@dataclass(frozen=True)
class CgroupMount:
    """One cgroup or cgroup2 line of mountinfo."""

    fstype: str  # "cgroup" (v1) or "cgroup2"
    root: str  # the directory of the hierarchy that is mounted: "/" unless a subtree is bind-mounted
    mount_point: PurePosixPath
    options: frozenset[str]  # super options: a v1 hierarchy lists its controllers there
    read_only: bool = False  # the mount's flag or its superblock's

    def preference(self) -> tuple[bool, int]:
        """Lower is better: the mount in /sys/fs/cgroup, then the one nearest the hierarchy root
        (others are bind mounts into containers, seen from the host)."""
        return self.mount_point.parent != CGROUP_DIR, len(PurePosixPath(self.root).parts)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup mounts in a /proc/PID/mountinfo text, in its order."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        fstype = fields[sep + 1]
        if fstype in ("cgroup", "cgroup2") and len(fields) > sep + 3:
            options = frozenset(fields[sep + 3].split(","))
            mounts.append(CgroupMount(fstype=fstype, root=unescape(fields[3]),
                                      mount_point=PurePosixPath(unescape(fields[4])), options=options,
                                      read_only="ro" in fields[5].split(",") or "ro" in options))
    return mounts


def v1_hierarchies(mounts: Sequence[CgroupMount]) -> dict[str, PurePosixPath]:
    """Controller -> mount point of its v1 hierarchy, for the controllers we use. Co-mounted
    controllers (`cpu,cpuacct`) map to the same directory."""
    found: dict[str, CgroupMount] = {}
    for mount in sorted((m for m in mounts if m.fstype == "cgroup"), key=CgroupMount.preference):
        for controller in mount.options & set(V1_CONTROLLERS):
            found.setdefault(controller, mount)
    return {controller: mount.mount_point for controller, mount in found.items()}


def v2_mount(mounts: Sequence[CgroupMount]) -> PurePosixPath | None:
    """The unified tree, if one is mounted at the usual place."""
    places = [m.mount_point for m in mounts if m.fstype == "cgroup2" and m.mount_point in V2_PLACES]
    return places[0] if places else None


_CRUN_ORDER = {"net_prio,net_cls": "net_cls,net_prio", "cpuacct,cpu": "cpu,cpuacct"}

_RUNTIME_LINKS = frozenset({"cpu", "cpuacct", "net_cls", "net_prio"})
"""The names crun links in a container's /sys/fs/cgroup to the co-mounted hierarchies
(`cpu` -> `cpu,cpuacct`) once it has mounted the others: a bind there would land on a
dangling link."""


def _runtime_names(proc_cgroup: str) -> dict[str, frozenset[str]]:
    """The name crun gives each v1 hierarchy of a /proc/PID/cgroup text (its directory in a
    container's /sys/fs/cgroup, and the one it makes the container's cgroup below in the
    host's), with the controllers (and `name=`) the hierarchy is mounted with. As crun does:
    `name=` dropped, two co-mounts put in their usual order."""
    names: dict[str, frozenset[str]] = {}
    for line in proc_cgroup.splitlines():
        _, controllers, _ = line.split(":", 2)
        if controllers:
            name = controllers.removeprefix("name=")
            names[_CRUN_ORDER.get(name, name)] = frozenset(controllers.split(","))
    return names


def _runtime_views(mounts: Sequence[CgroupMount], proc_cgroup: str) -> list[PurePosixPath]:
    """The v1 hierarchies a container's cgroup is bound from (CgroupDriver.views): mounted
    writable where crun names them, so that crun makes the container's cgroup there, under a
    name crun does not link. Any other is left to crun's own mount."""
    named = _runtime_names(proc_cgroup)
    return [m.mount_point for m in mounts
            if m.fstype == "cgroup" and not m.read_only and m.mount_point.parent == CGROUP_DIR
            and m.mount_point.name not in _RUNTIME_LINKS
            and (controllers := named.get(m.mount_point.name)) is not None and controllers <= m.options]


def detect(mountinfo: str | None = None, root: Path = Path("/"), proc_cgroup: str | None = None) -> CgroupDriver:
    """The driver for this host: v2 when the unified tree offers memory, cpu and pids and no v1
    memory hierarchy is mounted (a hybrid host keeps those on v1), else v1. `mountinfo`,
    `proc_cgroup` and `root` (prefixed to every mount point) let tests describe a host in a
    directory."""
    text = MOUNTINFO.read_text() if mountinfo is None else mountinfo
    mounts = parse_mountinfo(text)
    hierarchies = {name: root / path.relative_to("/") for name, path in v1_hierarchies(mounts).items()}
    unified = v2_mount(mounts)
    driver: CgroupDriver | None = None
    if unified is not None and "memory" not in hierarchies:
        v2 = V2Driver(root / unified.relative_to("/"))
        driver = v2 if V2_REQUIRED <= v2.available() else None
    if driver is None:
        others = [root / m.mount_point.relative_to("/") for m in mounts if m.mount_point.parent == CGROUP_DIR]
        bound = _runtime_views(mounts, PROC_CGROUP.read_text() if proc_cgroup is None else proc_cgroup)
        driver = V1Driver(hierarchies, others, {str(point): root / point.relative_to("/") for point in bound})
    on_top = mount_at(str(CGROUP_DIR), text)
    driver.runtime_cgroup_tmpfs = on_top is not None and on_top.fstype == "tmpfs"
    return driver

