"""cgroup v2: one unified tree. A controller works in a cgroup only when every ancestor has it in
cgroup.subtree_control, so creating a cgroup enables ours from the root down, one level at a
time, before making the next level (never in the leaf: the kernel refuses controllers in the
subtree of a cgroup that holds processes).

Unlike v1, lowering memory.max below the usage does not fail: the kernel reclaims and then
OOM-kills inside the cgroup. We refuse it beforehand as v1's kernel does (see _reclaim_down_to).

Unlike v1, an empty cpuset.cpus is valid ("the parent's CPUs"), but the kernel refuses to empty it
(ENOSPC) in a cgroup with processes once it was set: a cpuset removed from such a cgroup is
written as the parent's CPUs, which read back as no restriction.
"""

from __future__ import annotations

import errno
import math
import os
from bisect import bisect_left
from functools import lru_cache
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
    below_usage,
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
from specs.units import DEFAULT_CPU_SHARES, MAX_CPU_SHARES, MIN_CPU_SHARES

CONTROLLERS = ("memory", "cpu", "pids", "cpuset")
"""The controllers enabled for our cgroups (where the host offers them)."""

MAX_WEIGHT = 10000
"""cpu.weight runs from 1 to 10000 (100 by default, what the default shares convert to)."""


class V2Driver(CgroupDriver):
    unavailable = "the cgroup2 root does not offer {} (see its cgroup.controllers)"
    shown = frozenset({"memory.max", "cpu.max", "pids.max"})

    def _shown_dirs(self, relpath: str) -> dict[str, Path]:
        cgroup = at(self.root, relpath)
        return {name: cgroup for name in sorted(self.shown)}

    def __init__(self, root: Path):
        """`root`: mount point of the unified hierarchy (usually /sys/fs/cgroup)."""
        self.root = root

    def roots(self) -> list[Path]:
        return [self.root]

    def available(self) -> set[str]:
        """Controllers the root offers to its children: all we can enable on the way down."""
        return set((read_text(self.root / "cgroup.controllers") or "").split())

    def missing(self, limits: Limits) -> list[str]:
        available = self.available()
        return [name for name in limits.controllers() if name not in available]

    def create(self, relpath: str) -> list[str]:
        for parent, child in levels(self.root, relpath):
            _delegate(parent)
            mkdir(child)
        return [str(at(self.root, relpath) / "cgroup.procs")]

    def _make_child(self, parent: Path, child: Path) -> None:
        _delegate(parent)  # the child's files of each controller appear once the parent delegates it
        mkdir(child)

    def _read_present(self, relpath: str, parent_cpus: str | None) -> Limits:
        path = at_text(self.root, relpath)  # not a Path: a thousand of them intern every name
        return Limits(memory=read_max(f"{path}/memory.max"), cpus=_cpus(read_text(f"{path}/cpu.max")),
                      pids=read_max(f"{path}/pids.max"),
                      cpuset=shown_cpuset(read_text(f"{path}/cpuset.cpus") or None, parent_cpus),
                      cpu_shares=_shares(read_int(f"{path}/cpu.weight")))

    def usage(self, relpath: str) -> Usage | None:
        path = at_text(self.root, relpath)
        if not os.path.isdir(path):
            return None
        cpu_stat = read_keyed(f"{path}/cpu.stat")
        return Usage(memory_bytes=read_int(f"{path}/memory.current"),
                     memory_peak_bytes=read_int(f"{path}/memory.peak"),  # kernels >= 5.19
                     cpu_usec=cpu_stat.get("usage_usec"),
                     throttled_periods=cpu_stat.get("nr_throttled"),
                     throttled_usec=cpu_stat.get("throttled_usec"),
                     pids=read_int(f"{path}/pids.current"),
                     oom_kills=read_keyed(f"{path}/memory.events").get("oom_kill"))

    def write(self, relpath: str, limits: Limits) -> None:
        """As on v1, a memory limit below what the cgroup cannot give back is refused first."""
        if limits.memory is not None and not self.missing(limits):
            self._reclaim_down_to(relpath, limits.memory)
        super().write(relpath, limits)

    def _reclaim_down_to(self, relpath: str, memory: int) -> None:
        """Refuse a memory limit below the usage that reclaim cannot free, as v1's kernel does
        (EBUSY), where v2 would take it and OOM-kill in the cgroup until the usage fits: ask the
        kernel to reclaim the difference first (memory.reclaim, Linux >= 5.19; without it, the
        usage as it is decides). A process that grows between this check and the write meets the
        new limit as it would any later growth."""
        current = at(self.root, relpath) / "memory.current"
        used = read_int(current)
        if used is None or used <= memory:
            return
        try:
            write_text(current.with_name("memory.reclaim"), str(used - memory))
        except OSError as exc:  # EAGAIN: it could not reclaim that much; ENOENT: kernel < 5.19
            if exc.errno not in (errno.EAGAIN, errno.ENOENT):
                raise CgroupError(f"cannot reclaim memory of {relpath}: {exc.strerror}") from exc
        used = read_int(current)
        if used is not None and used > memory:
            raise below_usage(relpath, memory, used, "the kernel could not reclaim it (v2 would OOM-kill instead)")

    def _shares_shown(self, shares: int | None) -> int | None:
        """The kernel keeps a weight: shares that convert to the same one read back alike."""
        return None if shares is None else _shares(weight_of(shares))

    def _effective_cpus(self) -> tuple[Path, str] | None:
        return self.root, "cpuset.cpus.effective"  # absent (None when read) without cpuset

    def _knobs(self, relpath: str, limits: Limits) -> list[Knob]:
        """Only the files of enabled controllers exist; swap is capped at zero alongside a memory
        limit, so "memory" means the same as on v1 (where memory+swap is limited)."""
        path = at(self.root, relpath)
        memory = "max" if limits.memory is None else str(limits.memory)
        quota = "max" if limits.cpus is None else str(quota_of(limits.cpus))
        candidates = [
            Knob(path / "memory.max", memory, "memory"),
            Knob(path / "memory.swap.max", "max" if limits.memory is None else "0", "memory"),
            Knob(path / "cpuset.cpus", limits.cpuset or self._no_cpuset(relpath), "cpuset"),
            Knob(path / "cpu.max", f"{quota} {CPU_PERIOD_US}", "cpus"),
            Knob(path / "cpu.weight", str(weight_of(limits.cpu_shares or DEFAULT_CPU_SHARES)), "cpu_shares"),
            Knob(path / "pids.max", "max" if limits.pids is None else str(limits.pids), "pids"),
        ]
        return [knob for knob in candidates if knob.path.exists()]

    def _no_cpuset(self, relpath: str) -> str:
        """cpuset.cpus for no restriction: "" (the parent's CPUs, following them) where none is set,
        else the parent's CPUs as they are, since the kernel refuses to empty a cpuset of a cgroup
        with processes (ENOSPC)."""
        if not read_text(at(self.root, relpath) / "cpuset.cpus"):
            return ""
        return self._parent_cpus(relpath) or ""


def _cpus(cpu_max: str | None) -> float | None:
    """cpu.max is "QUOTA PERIOD", QUOTA "max" when unlimited."""
    if cpu_max is None:
        return None
    quota, period = cpu_max.split()
    return None if quota == "max" else cpus_of(int(quota), int(period))


def weight_of(shares: int) -> int:
    """cpu.weight for CPU shares, as runc (>= 1.3) and crun (>= 1.23) convert them: a quadratic in
    log2(shares) through (2, 1), (1024, 100) and (262144, 10000), so the default shares give the
    default weight (the linear formula they used before gave 1024 a weight of 39)."""
    if shares <= MIN_CPU_SHARES:
        return 1
    if shares >= MAX_CPU_SHARES:
        return MAX_WEIGHT
    bits = math.log2(shares)
    return math.ceil(10 ** ((bits * bits + 125 * bits) / 612 - 7 / 34))


@lru_cache(maxsize=MAX_WEIGHT)
def shares_of(weight: int) -> int:
    """The shares a cpu.weight (1 to 10000) reads back as: of the shares that convert to it (every
    weight has some), the one divisible by the highest power of two, so the usual 512 or 2048 read back as
    written rather than as the least of their dozen neighbours of the same weight."""
    shares = range(MIN_CPU_SHARES, MAX_CPU_SHARES + 1)
    first, after = (bisect_left(shares, value, key=weight_of) for value in (weight, weight + 1))
    return max(shares[first:after], key=lambda value: value & -value)


def _shares(weight: int | None) -> int | None:
    return None if weight is None else shown_shares(shares_of(weight))


def _delegate(cgroup: Path) -> None:
    """Enable our controllers for the children of `cgroup`, those it has and not yet enabled."""
    offered = set((read_text(cgroup / "cgroup.controllers") or "").split())
    enabled = set((read_text(cgroup / "cgroup.subtree_control") or "").split())
    wanted = [name for name in CONTROLLERS if name in offered and name not in enabled]
    if not wanted:
        return
    try:
        write_text(cgroup / "cgroup.subtree_control", " ".join(f"+{name}" for name in wanted))
    except OSError as exc:
        why = " (it holds processes: v2 allows controllers below a cgroup only when it has none)" \
            if exc.errno == errno.EBUSY else ""
        raise CgroupError(f"cannot enable the {', '.join(wanted)} controllers in {cgroup}: "
                          f"{exc.strerror}{why}") from exc
