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

_RUNTIME_LINKS = {part: comount for comount in _CRUN_ORDER.values() for part in comount.split(",")}
"""The names crun links in a container's /sys/fs/cgroup to the co-mounted hierarchies, once it
has mounted them: each controller's name to its co-mount's (`cpu` -> `cpu,cpuacct`)."""


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


def _runtime_views(mounts: Sequence[CgroupMount], proc_cgroup: str) -> dict[str, PurePosixPath]:
    """The v1 hierarchies a container's cgroup is bound from (CgroupDriver.views), by the name
    crun would mount each under in the container's /sys/fs/cgroup: every hierarchy crun mounts
    (those of its own /proc/self/cgroup), each mounted writable at that name on the host (where
    crun makes the container's cgroup; the last mount stacked there), and a co-mounted one under
    the names crun links to it too. Empty unless every one is there (one not mounted, mounted
    read-only or under another name): crun then mounts them all."""
    named = _runtime_names(proc_cgroup)
    in_effect = {m.mount_point.name: m for m in mounts if m.mount_point.parent == CGROUP_DIR}  # the last one stacked
    found = {name: m.mount_point for name, m in in_effect.items()
             if m.fstype == "cgroup" and not m.read_only
             and (controllers := named.get(name)) is not None and controllers <= m.options}
    if found.keys() != named.keys():
        return {}
    return {**found, **{link: found[target] for link, target in _RUNTIME_LINKS.items() if target in found}}


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
    on_top = mount_at(str(CGROUP_DIR), text)
    runtime_tmpfs = on_top is not None and on_top.fstype == "tmpfs"
    if driver is None:
        others = [root / m.mount_point.relative_to("/") for m in mounts if m.mount_point.parent == CGROUP_DIR]
        # Bound only where crun would show the container a tmpfs of v1 hierarchies: on a cgroup2
        # /sys/fs/cgroup it mounts that alone.
        bound = _runtime_views(mounts, PROC_CGROUP.read_text() if proc_cgroup is None else proc_cgroup) \
            if runtime_tmpfs else {}
        driver = V1Driver(hierarchies, others, {str(CGROUP_DIR / name): root / point.relative_to("/")
                                                for name, point in bound.items()})
    driver.runtime_cgroup_tmpfs = runtime_tmpfs
    return driver

