"""The host's cgroupfs as the product's own driver (kernel.cgroups.detect) sees it, for tests that
read or plant cgroup files by hand on either layout: v1 hierarchies (our hosts) or the v2 unified
tree (the VM lane). Tests never spell /sys/fs/cgroup/<controller> themselves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kernel.cgroups import CgroupDriver, detect
from kernel.cgroups_common import FIELD_CONTROLLERS, at
from kernel.cgroups_v1 import V1Driver
from kernel.cgroups_v2 import V2Driver

DRIVER: CgroupDriver = detect()
V2 = isinstance(DRIVER, V2Driver)

_LIMIT_FILES = {
    "memory": ("memory.max",) if V2 else ("memory.limit_in_bytes",),
    "cpus": ("cpu.max",) if V2 else ("cpu.cfs_quota_us", "cpu.cfs_period_us"),
    "pids": ("pids.max",),
    "cpuset": ("cpuset.cpus",),
    "cpu_shares": ("cpu.weight",) if V2 else ("cpu.shares",),
}
"""Field of Limits -> the files that hold it, as the driver writes them."""


def directory(relpath: str, controller: str) -> Path:
    """The cgroup's directory in the hierarchy of `controller` (the one tree on v2)."""
    if isinstance(DRIVER, V1Driver):
        return at(DRIVER.hierarchies[controller], relpath)
    return at(DRIVER.roots()[0], relpath)


def limit_file(relpath: str, field: str) -> Path:
    """The one file that holds a limit (on v1, the quota's file for `cpus`)."""
    return directory(relpath, FIELD_CONTROLLERS[field]) / _LIMIT_FILES[field][0]


def limit_text(relpath: str, field: str) -> str:
    """The kernel's exact text for a limit, without the newline; `cpus` reads "QUOTA PERIOD" on
    both layouts (v1's two files joined, as v2's cpu.max has them)."""
    cgroup = directory(relpath, FIELD_CONTROLLERS[field])
    return " ".join((cgroup / name).read_text().strip() for name in _LIMIT_FILES[field])


def limit_text_inside(read: Callable[[str], str], field: str) -> str:
    """limit_text as a container reads it at /sys/fs/cgroup (`read`: a path inside -> its text)."""
    base = "/sys/fs/cgroup" if V2 else f"/sys/fs/cgroup/{FIELD_CONTROLLERS[field]}"
    return " ".join(read(f"{base}/{name}").strip() for name in _LIMIT_FILES[field])


def hierarchy_roots() -> list[Path]:
    """Every hierarchy a container's cgroup may be in (named ones and a hybrid host's unified tree
    included): where a cgroup parent shows up."""
    return DRIVER.removal_roots()


def cgroup_of(proc_cgroup: str, controller: str) -> str | None:
    """A process's cgroup in the hierarchy of `controller`, from the text of /proc/PID/cgroup
    ("ID:CONTROLLERS:PATH" per hierarchy; v2's one line is "0::PATH")."""
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if (controllers == "") if V2 else (controller in controllers.split(",")):
            return path
    return None
