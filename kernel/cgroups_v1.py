"""cgroup v1: each controller on its own hierarchy (/sys/fs/cgroup/memory, .../pids, ...), some
possibly co-mounted (`cpu,cpuacct`). A container's cgroup is a directory of the same relative
path in each hierarchy, and a process joins it by writing itself into each cgroup.procs.

Quirks handled here:
- A new cpuset cgroup has empty cpuset.cpus and cpuset.mems, and no process can join it until
  both are set: every new level copies them from its parent.
- memory.memsw.limit_in_bytes (memory + swap) must never be below memory.limit_in_bytes: the
  two are written in the order that keeps that true at every step.
- Lowering memory.limit_in_bytes below what the cgroup uses, when reclaim cannot free enough,
  fails with EBUSY and keeps the old limit (v2 would OOM-kill instead).
- "No limit" reads back as the largest page-aligned long (9223372036854771712 with 4 KiB pages).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from kernel.cgroups_common import (
    CPU_PERIOD_US,
    CgroupDriver,
    CgroupError,
    Knob,
    Limits,
    Usage,
    at,
    at_text,
    cpus_of,
    levels,
    mkdir,
    quota_of,
    read_int,
    read_keyed,
    read_max,
    read_text,
    shown_cpuset,
    shown_shares,
    write_text,
)
from specs import names
from specs.units import DEFAULT_CPU_SHARES

CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids")
"""The hierarchies a container's cgroup is made in (cpuacct only for its CPU time counter)."""

UNLIMITED_FLOOR = 2**62
"""Any memory limit at least this large is the kernel's "unlimited" (LONG_MAX rounded down to
the page size, which differs between architectures); no real limit comes near it."""


class V1Driver(CgroupDriver):
    unavailable = "no cgroup v1 hierarchy is mounted for {}"
    shown_in = {"memory.limit_in_bytes": "memory", "cpu.cfs_period_us": "cpu", "cpu.cfs_quota_us": "cpu",
                "pids.max": "pids"}
    """The shown files (CgroupDriver.shown) and the hierarchy of each, in the order they are written."""
    shown = frozenset(shown_in)
    bounded_by_parent = {"cpu.cfs_quota_us": "-1"}  # a child's quota above its parent's: EINVAL

    def __init__(self, hierarchies: Mapping[str, Path], others: Sequence[Path] = (),
                 seen_at: Mapping[str, Path] | None = None):
        """`hierarchies`: controller name -> mount point of its hierarchy root; co-mounted
        controllers share a path. `others`: every other hierarchy, where the OCI runtime places
        the container too (devices, freezer, name=systemd, ...) and leaves our levels behind.
        `seen_at`: where a container sees each v1 hierarchy in its /sys/fs/cgroup (a tmpfs the
        bundle makes, its cgroup of each bound in it) -> the hierarchy's mount point, where this
        process reaches it (the same, but for tests); empty where the runtime mounts them."""
        self.hierarchies = {name: path for name, path in hierarchies.items() if name in CONTROLLERS}
        self.others = [path for path in others if path not in self.hierarchies.values()]
        self.seen_at = dict(seen_at or {})

    def views(self, runtime_path: str) -> dict[str, str]:
        """Every v1 hierarchy mounted afresh in a container walks every cgroup of the host's
        unified tree under the kernel's cgroup lock (cgroup1_get_tree), which a hybrid host fills
        with a container's cgroups, and looks its superblock up among the cgroup file system's
        (kernfs_test_super): beside 1,000 containers a start's mount calls took 3.0-4.4 ms with
        two hierarchies mounted afresh, 1.7-2.0 ms with none (perf trace). A bind of the same
        directory (the root of the container's cgroup namespace) shows the same files;
        kernel.cgroups picks the hierarchies, all or none."""
        return {inside: at_text(host, runtime_path) for inside, host in self.seen_at.items()}

    def roots(self) -> list[Path]:
        return list(dict.fromkeys(self.hierarchies.values()))

    def removal_roots(self) -> list[Path]:
        return [*self.roots(), *self.others]

    def missing(self, limits: Limits) -> list[str]:
        return [name for name in limits.controllers() if name not in self.hierarchies]

    def create(self, relpath: str) -> list[str]:
        return self._create_in(self.roots(), relpath)

    def create_everywhere(self, relpath: str) -> list[str]:
        return self._create_in(self.removal_roots(), relpath)

    def _create_in(self, roots: Sequence[Path], relpath: str) -> list[str]:
        cpuset_root = self.hierarchies.get("cpuset")
        for root in roots:
            for parent, child in levels(root, relpath):
                mkdir(child)
                if root == cpuset_root:
                    _inherit_cpuset(parent, child)
        return [str(at(root, relpath) / "cgroup.procs") for root in roots]

    def _read_present(self, relpath: str, parent_cpus: str | None) -> Limits:
        return Limits(memory=self._memory_limit(relpath), cpus=self._cpus(relpath),
                      pids=read_max(self._file("pids", relpath, "pids.max")),
                      cpuset=shown_cpuset(read_text(self._file("cpuset", relpath, "cpuset.cpus")), parent_cpus),
                      cpu_shares=shown_shares(read_int(self._file("cpu", relpath, "cpu.shares"))))

    def usage(self, relpath: str) -> Usage | None:
        if not any(os.path.isdir(at_text(root, relpath)) for root in self.roots()):
            return None
        cpu_stat = read_keyed(self._file("cpu", relpath, "cpu.stat"))
        cpu_ns = read_int(self._file("cpuacct", relpath, "cpuacct.usage"))
        throttled_ns = cpu_stat.get("throttled_time")
        return Usage(
            memory_bytes=read_int(self._file("memory", relpath, "memory.usage_in_bytes")),
            memory_peak_bytes=read_int(self._file("memory", relpath, "memory.max_usage_in_bytes")),
            cpu_usec=None if cpu_ns is None else cpu_ns // 1000,
            throttled_periods=cpu_stat.get("nr_throttled"),
            throttled_usec=None if throttled_ns is None else throttled_ns // 1000,
            pids=read_int(self._file("pids", relpath, "pids.current")),
            oom_kills=self._oom_kills(relpath))

    def _shown_dirs(self, relpath: str) -> dict[str, Path]:
        return {name: at(self.hierarchies[controller], relpath)
                for name, controller in self.shown_in.items() if controller in self.hierarchies}

    def _file(self, controller: str, relpath: str, name: str) -> str | None:
        """A file of the cgroup in the controller's hierarchy; None when the controller is not
        mounted, which reads as "no value"."""
        root = self.hierarchies.get(controller)
        return None if root is None else f"{at_text(root, relpath)}/{name}"

    def _knob(self, controller: str, relpath: str, name: str, value: str, field: str) -> Knob:
        return Knob(at(self.hierarchies[controller], relpath) / name, value, field)

    def _memory_limit(self, relpath: str) -> int | None:
        limit = read_int(self._file("memory", relpath, "memory.limit_in_bytes"))
        return None if limit is None or limit >= UNLIMITED_FLOOR else limit

    def _cpus(self, relpath: str) -> float | None:
        quota = read_int(self._file("cpu", relpath, "cpu.cfs_quota_us"))
        if quota is None or quota < 0:  # -1: no quota, whatever the period
            return None
        period = read_int(self._file("cpu", relpath, "cpu.cfs_period_us"))
        return None if period is None else cpus_of(quota, period)

    def _oom_kills(self, relpath: str) -> int | None:
        """oom_kill of memory.oom_control (kernels >= 4.13), of the cgroup and of the runtime's
        child of it: v1 counts a kill in the victim's own cgroup (that child), not in the one
        whose limit was hit, and forgets it when the runtime removes that child after the
        container ended. Before 4.13 only memory.failcnt, which counts every hit of the limit,
        killed or not: an upper bound."""
        cgroup = self._file("memory", relpath, "memory.oom_control")
        if cgroup is None:
            return None
        runtime_child = self._file("memory", names.runtime_cgroup_path(relpath), "memory.oom_control")
        counts = [read_keyed(path).get("oom_kill") for path in (cgroup, runtime_child)]
        if counts[0] is not None:
            return sum(count or 0 for count in counts)
        return read_int(self._file("memory", relpath, "memory.failcnt"))

    def _effective_cpus(self) -> tuple[Path, str] | None:
        root = self.hierarchies.get("cpuset")
        return None if root is None else (root, "cpuset.effective_cpus")

    def _knobs(self, relpath: str, limits: Limits) -> list[Knob]:
        """Memory first (the one the kernel refuses most: EBUSY), so a refusal leaves nothing to
        undo; then the cpuset, the CPU quota and shares and the pid limit."""
        knobs: list[Knob] = []
        if "memory" in self.hierarchies:
            knobs += self._memory_knobs(relpath, limits.memory)
        if "cpuset" in self.hierarchies:
            cpus = limits.cpuset if limits.cpuset is not None else self._parent_cpus(relpath) or ""
            knobs.append(self._knob("cpuset", relpath, "cpuset.cpus", cpus, "cpuset"))
        if "cpu" in self.hierarchies:
            quota = -1 if limits.cpus is None else quota_of(limits.cpus)
            knobs += [self._knob("cpu", relpath, "cpu.cfs_period_us", str(CPU_PERIOD_US), "cpus"),
                      self._knob("cpu", relpath, "cpu.cfs_quota_us", str(quota), "cpus"),
                      self._knob("cpu", relpath, "cpu.shares", str(limits.cpu_shares or DEFAULT_CPU_SHARES),
                                 "cpu_shares")]
        if "pids" in self.hierarchies:
            pids = "max" if limits.pids is None else str(limits.pids)
            knobs.append(self._knob("pids", relpath, "pids.max", pids, "pids"))
        return knobs

    def _memory_knobs(self, relpath: str, memory: int | None) -> list[Knob]:
        """memory.limit_in_bytes, and memory+swap set to the same value so that the limit cannot be
        dodged by swapping (where the kernel has swap accounting). memsw may never be below the
        memory limit: raise it first when raising, lower it last when lowering."""
        value = -1 if memory is None else memory
        limit = self._knob("memory", relpath, "memory.limit_in_bytes", str(value), "memory")
        memsw = self._knob("memory", relpath, "memory.memsw.limit_in_bytes", str(value), "memory")
        if not memsw.path.exists():
            return [limit]
        current = read_int(limit.path) or 0
        raising = memory is None or memory >= current
        return [memsw, limit] if raising else [limit, memsw]


def _inherit_cpuset(parent: Path, child: Path) -> None:
    """Copy the CPUs and memory nodes of the parent into a new cpuset cgroup (left empty by the
    kernel, which then refuses every process). A level left empty by an interrupted run is
    fixed the same way."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not read_text(child / name):
            try:
                write_text(child / name, read_text(parent / name) or "")
            except OSError as exc:
                raise CgroupError(f"cannot initialise {child / name} from its parent: {exc.strerror}") from exc
