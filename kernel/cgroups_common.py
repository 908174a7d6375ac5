"""What both cgroup drivers share: the typed limits and usage, file access with the kernel's
error codes turned into messages, all-or-nothing knob writes, and the cgroup tree walks
(remove, owned, procs) that are the same on v1 and v2 because both are plain directories.

kernel/cgroups.py picks the driver; callers import from there.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

from kernel import crashpoints
from kernel.pseudofiles import read_bytes
from kernel.retrying import retry_transient
from specs import names
from specs.names import KEY_PATTERN, NAME_PATTERN
from specs.units import DEFAULT_CPU_SHARES, parse_cpu_list

CPU_PERIOD_US = 100_000
"""The CFS period we write: 100 ms, the kernel's default, so a quota reads as cpus * 100000."""

CPU_DIGITS = 5
"""One quota microsecond at our period is 0.00001 CPU: cpus with up to five decimals read back
exactly what was written."""

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
"""Memory limits are kept in pages: the kernel rounds a written byte count down to a page."""

ONLINE_CPUS = Path("/sys/devices/system/cpu/online")
"""Every CPU the kernel runs on: the host's CPUs where no cpuset hierarchy says otherwise."""

FIELD_CONTROLLERS = {"memory": "memory", "cpus": "cpu", "pids": "pids", "cpuset": "cpuset", "cpu_shares": "cpu"}
"""The controller that enforces each field of Limits."""


class CgroupError(Exception):
    """The kernel refused a cgroup operation, or the host cannot enforce a limit."""


@dataclass(frozen=True)
class Limits:
    """Limits of one cgroup in the spec's shape (specs.model.Resources); None = not limited."""

    memory: int | None = None  # bytes
    cpus: float | None = None  # CPU quota in cores
    pids: int | None = None
    cpuset: str | None = None  # kernel CPU list ("0-1"); None = all CPUs of the parent
    cpu_shares: int | None = None  # relative CPU weight in Docker's shares; None = the default (1024)

    def controllers(self) -> list[str]:
        """The controllers these limits need in order to be enforced."""
        return [controller for field, controller in FIELD_CONTROLLERS.items()
                if getattr(self, field) is not None]


@dataclass(frozen=True)
class Usage:
    """What a cgroup has consumed; None where the host has no such counter."""

    memory_bytes: int | None
    memory_peak_bytes: int | None
    cpu_usec: int | None
    throttled_periods: int | None
    throttled_usec: int | None
    pids: int | None
    oom_kills: int | None


@dataclass(frozen=True)
class Knob:
    """One value to write into one cgroup file, on behalf of one field of Limits."""

    path: Path
    value: str
    field: str


def quota_of(cpus: float) -> int:
    return round(cpus * CPU_PERIOD_US)


def cpus_of(quota: int, period: int) -> float:
    return round(quota / period, CPU_DIGITS)


def parts_of(relpath: str) -> list[str]:
    """The path components of a cgroup below a hierarchy root; refuses anything that could
    leave that root."""
    parts = relpath.strip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise CgroupError(f"invalid cgroup path {relpath!r}")
    return parts


def at(root: Path, relpath: str) -> Path:
    """The cgroup's directory in one hierarchy."""
    return Path(root, "/".join(parts_of(relpath)))


def at_text(root: Path, relpath: str) -> str:
    """at() as a string: observing a thousand cgroups builds ~10,000 of these, and a Path costs
    ~10 us to build."""
    return f"{root}/{_checked(relpath)}"


@lru_cache(maxsize=8192)
def _checked(relpath: str) -> str:
    """The relative path, checked by parts_of (a pure function of it: a pass asks it again for
    each file of each cgroup, ~15,000 times at a thousand containers)."""
    return "/".join(parts_of(relpath))


def levels(root: Path, relpath: str) -> Iterator[tuple[Path, Path]]:
    """(parent, child) directories from the hierarchy root down to the cgroup itself."""
    parent = root
    for part in parts_of(relpath):
        yield parent, parent / part
        parent = parent / part


def read_text(path: str | Path | None) -> str | None:
    """A cgroup file's value without the newline; None when the file (or its hierarchy) does not
    exist."""
    if path is None:
        return None
    try:
        return read_bytes(path).decode().strip()
    except FileNotFoundError:
        return None


def read_int(path: str | Path | None) -> int | None:
    text = read_text(path)
    return None if text is None else int(text)


def read_keyed(path: str | Path | None) -> dict[str, int]:
    """A flat-keyed file ("nr_throttled 3" per line): cpu.stat, memory.events, oom_control."""
    text = read_text(path) or ""
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def read_max(path: str | Path | None) -> int | None:
    """A limit the kernel prints as "max" when unset (pids.max, memory.max)."""
    text = read_text(path)
    return None if text in (None, "max") else int(text)


def write_text(path: Path, value: str) -> None:
    """One write(2) of the whole value: a cgroup file parses each write on its own. The newline
    keeps an empty value (v2 cpuset.cpus "inherit") from being no write at all."""
    crashpoints.step("cgroup-write")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, (value + "\n").encode())
    finally:
        os.close(fd)


def mkdir(path: Path) -> None:
    crashpoints.step("cgroup-mkdir")
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise CgroupError(f"cannot create cgroup {path}: {exc.strerror}") from exc


def _has_children(path: str | Path) -> bool:
    """One stat: cgroupfs (kernfs) counts a directory's subdirectories in its link count (2 +
    them), where a scan of the stack's cgroup lists its thousand containers' (removing each
    of N containers scanned it: 4.5 s of a `down` at N=1000). A filesystem that does not
    count them (st_nlink 1) is scanned."""
    links = os.stat(path).st_nlink
    if links != 1:
        return links > 2
    return any(entry.is_dir(follow_symlinks=False) for entry in os.scandir(path))


def _amount(text: str | None) -> float:
    """A limit's value for comparison: its first number (v2's cpu.max is "QUOTA PERIOD"), with
    "max", -1 and a missing file as no limit."""
    first = (text or "max").split()[0]
    return math.inf if first in ("max", "-1") else float(first)


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EBUSY


@retry_transient(_is_busy, within=2.0, first_wait=0.002, max_wait=0.1)
def _rmdir(path: str | Path) -> None:
    """The kernel keeps a cgroup busy (EBUSY) for a moment after its last process was killed,
    until the exit has run its course: retried for about two seconds."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


class CgroupDriver(ABC):
    """One cgroup layout (v1 hierarchies or the v2 unified tree). A cgroup is named by its path
    below the hierarchy root(s), e.g. "reconcile/stack/web" (specs.names.cgroup_relpath)."""

    unavailable: str
    """Why the host lacks the controllers named in "{}", for messages."""
    runtime_cgroup_tmpfs: bool = False
    """Whether the runtime would show a container its v1 hierarchies as directories of a tmpfs
    of its own at /sys/fs/cgroup (unless the bundle makes that tmpfs, with `views` bound in it),
    rather than one cgroup2 mount there: it would unless the host's /sys/fs/cgroup is cgroup2
    (crun looks at that file system's type), whichever driver this is (kernel.cgroups.detect
    sets it)."""

    @abstractmethod
    def roots(self) -> list[Path]:
        """The hierarchy roots a container's cgroup is made in."""

    def removal_roots(self) -> list[Path]:
        """Every hierarchy a container's cgroup may exist in, ours or made by the runtime."""
        return self.roots()

    @abstractmethod
    def missing(self, limits: Limits) -> list[str]:
        """Controllers the limits need that this host cannot enforce."""

    @abstractmethod
    def create(self, relpath: str) -> list[str]:
        """Make the cgroup (idempotent); returns the cgroup.procs files a process writes "0" into
        to join it."""

    def views(self, runtime_path: str) -> dict[str, str]:
        """The runtime's cgroup (`runtime_path`, as its linux.cgroupsPath) as the container is
        to see it: mount point inside -> directory on the host, bound there in place of every
        hierarchy the runtime would mount afresh (in a tmpfs of ours at /sys/fs/cgroup), or
        empty: the runtime mounts them. Empty for the v2 driver: a pure v2 host's one cgroup2
        mount walks nothing (a hybrid host with every controller on its unified tree keeps
        crun's v1 mounts)."""
        return {}

    def create_everywhere(self, relpath: str) -> list[str]:
        """Make the cgroup in every hierarchy mounted on the host (idempotent), named ones
        (name=systemd) and the unified tree of a hybrid host included; returns the cgroup.procs
        files a process writes "0" into to leave every cgroup of its caller: systemd kills what
        is left in a session scope or a oneshot unit when it ends."""
        return self.create(relpath)

    def read(self, relpath: str) -> Limits | None:
        """The limits in force, normalised to the spec's shape; None when there is no cgroup (or
        it is missing from one of the hierarchies: a process outside part of its cgroup cannot
        be limited there, so the caller has to recreate it)."""
        if not all(os.path.isdir(at_text(root, relpath)) for root in self.roots()):
            return None
        return self._read_present(relpath, self._parent_cpus(relpath))

    @abstractmethod
    def _read_present(self, relpath: str, parent_cpus: str | None) -> Limits:
        """read() of a cgroup known to exist in every hierarchy of roots(), whose parent may run
        on `parent_cpus` (a cpuset equal to them is no restriction)."""

    @abstractmethod
    def usage(self, relpath: str) -> Usage | None:
        """Counters of the cgroup; None when there is no cgroup."""

    @abstractmethod
    def _knobs(self, relpath: str, limits: Limits) -> list[Knob]:
        """The writes that set the limits, in an order the kernel accepts."""

    @abstractmethod
    def _effective_cpus(self) -> tuple[Path, str] | None:
        """The cpuset hierarchy's root and the name of its file of the CPUs a cgroup may run on;
        None when the host has no cpuset controller."""

    def _parent_cpus(self, relpath: str) -> str | None:
        """The CPUs the parent cgroup may run on: a cpuset equal to them is no restriction."""
        cpuset = self._effective_cpus()
        if cpuset is None:
            return None
        parent = at_text(cpuset[0], relpath).rsplit("/", 1)[0]  # not a Path: it interns every name in it
        return read_text(f"{parent}/{cpuset[1]}")

    def usable_cpus(self, parent: str) -> list[int]:
        """The CPUs a container under `parent` can be given: the cpuset of the parent, or of its
        nearest ancestor that has one (a level not made yet will copy its parent's CPUs; on v2, a
        level without the cpuset controller enabled runs on its parent's); every online CPU on a
        host without a cpuset controller."""
        cpuset = self._effective_cpus()
        text = None
        if cpuset is not None:
            root, name = cpuset
            cgroup = at(root, parent)
            while cgroup != root and read_text(cgroup / name) is None:
                cgroup = cgroup.parent
            text = read_text(cgroup / name)
        text = text or read_text(ONLINE_CPUS)
        return parse_cpu_list(text) if text else []

    shown: frozenset[str] = frozenset()
    """The limit files a program reads to size itself (a JVM's heap, Node's, Go's GOMEMLIMIT
    helpers, nproc-like CPU counts): copied into the runtime's child of a container's cgroup,
    which is the cgroup the container sees as its own. The kernel holds both (the lower wins);
    a run reads back the container's cgroup's alone, and writes them in an order that leaves the
    two telling a next run what it must do (_ordered)."""
    bounded_by_parent: Mapping[str, str] = {}
    """Shown files whose value the kernel holds at most the parent's in a child, each with its
    value for no limit of the child's own (v1's CPU quota: -1, then the parent's applies)."""

    def show_limits(self, relpath: str) -> None:
        """Make the runtime's child of the container's cgroup, before the runtime starts the
        container in it, with the shown limit files of the container's cgroup copied in: the
        program reads its limits there from its first instruction. Idempotent."""
        made: set[Path] = set()
        for name, cgroup in self._shown_dirs(relpath).items():  # in the order the kernel takes them
            if cgroup not in made:  # in the hierarchies of the shown files only: the runtime makes the rest
                self._make_child(cgroup, cgroup / names.RUNTIME_CGROUP)
                made.add(cgroup)
            shown, value = cgroup / names.RUNTIME_CGROUP / name, read_text(cgroup / name)
            if value is not None and read_text(shown) != value:
                write_text(shown, value)

    def _shown_dirs(self, relpath: str) -> dict[str, Path]:
        """Each shown file's name -> the directory of the cgroup that holds it, in the order
        they are written (v1's period before its quota)."""
        return {}

    def _make_child(self, parent: Path, child: Path) -> None:
        """Make a child of an existing cgroup."""
        mkdir(child)

    def _shown(self, knobs: Sequence[Knob]) -> list[Knob]:
        """The knobs of the shown files, aimed at the runtime's child of their cgroup, where it
        has them (a container not running has no child)."""
        aimed = (Knob(knob.path.parent / names.RUNTIME_CGROUP / knob.path.name, knob.value, knob.field)
                 for knob in knobs if knob.path.name in self.shown)
        return [knob for knob in aimed if knob.path.exists()]

    def write(self, relpath: str, limits: Limits) -> None:
        """Set every limit or none: if the kernel refuses one, those already written are put back,
        so a failed update leaves the previous limits in force. The shown ones are set on the
        runtime's child too (show_limits), in the order the kernel takes."""
        missing = self.missing(limits)
        if missing:
            raise CgroupError(f"cannot limit {relpath}: {self.unavailable.format(', '.join(missing))}")
        knobs = self._knobs(relpath, limits)
        done: list[tuple[Path, str]] = []
        for knob in self._ordered(knobs, self._shown(knobs)):
            old = read_text(knob.path)
            if old == knob.value:
                continue
            try:
                write_text(knob.path, knob.value)
            except OSError as exc:
                error = self._refusal(relpath, limits, knob, exc)
                self._restore(done, error)
                raise error from exc
            done.append((knob.path, old or ""))

    def _ordered(self, knobs: Sequence[Knob], shown: Sequence[Knob]) -> list[Knob]:
        """The writes of the cgroup's knobs and of its child's, in an order after which a write cut
        short leaves nothing a next run would not see: the child's first (the container's cgroup,
        which the next run reads, is written last, and holds its old limits over the child until
        then); a bounded value that goes up, which the kernel would refuse in the child first, is
        lifted in the child (no limit of its own: its parent's applies), then set after."""
        first: list[Knob] = []
        last: list[Knob] = []
        for knob in shown:
            unbounded = self.bounded_by_parent.get(knob.path.name)
            if unbounded is not None and _amount(knob.value) > _amount(read_text(knob.path.parent.parent
                                                                                 / knob.path.name)):
                first.append(Knob(knob.path, unbounded, knob.field))
                last.append(knob)
            else:
                first.append(knob)
        return [*first, *knobs, *last]

    def normalise(self, relpath: str, limits: Limits) -> Limits:
        """The limits as read() reports them once written: the kernel keeps memory in pages and
        the quota in microseconds, and a cpuset of all the parent's CPUs is no restriction."""
        return Limits(
            memory=None if limits.memory is None else limits.memory // PAGE_SIZE * PAGE_SIZE,
            cpus=None if limits.cpus is None else cpus_of(quota_of(limits.cpus), CPU_PERIOD_US),
            pids=limits.pids,
            cpuset=self._cpuset_shown(relpath, limits.cpuset),
            cpu_shares=self._shares_shown(limits.cpu_shares))

    def _shares_shown(self, shares: int | None) -> int | None:
        """The CPU shares as read() reports them once written: v1 keeps them as they are."""
        return shown_shares(shares)

    def procs(self, relpath: str) -> list[int]:
        """The processes in the cgroup and in those below it, in any hierarchy: one a crash
        left in the runtime's child cgroup (a container's process whose runtime died before
        cleaning up) keeps the cgroup busy as surely as one in the cgroup itself."""
        pids: set[int] = set()
        for root in self.removal_roots():
            for directory, _, _ in os.walk(at_text(root, relpath)):
                pids.update(int(line) for line in (read_text(f"{directory}/cgroup.procs") or "").split())
        return sorted(pids)

    def remove(self, relpath: str, parent: str) -> None:
        """Remove the cgroup (with any sub-cgroups its processes made), then its ancestors below
        `parent` that are left empty. Nothing outside `parent` is touched; a cgroup already gone
        counts as removed."""
        crashpoints.step("cgroup-remove")
        ancestors = self._ancestors_of([relpath], parent)  # checked before anything is touched
        for root in self.removal_roots():
            _remove_tree(at_text(root, relpath))
        self._remove_empty(ancestors)

    def remove_if_empty(self, relpath: str, parent: str) -> bool:
        """`remove`'s common case, one rmdir per hierarchy (a walk of each and a look at its
        processes cost ~0.6 s of a `down` of a thousand): False where a hierarchy refused (the
        cgroup holds processes or sub-cgroups), for `remove` to finish. Ancestors are left to
        `remove_empty_ancestors`."""
        crashpoints.step("cgroup-remove")
        self._ancestors_below(relpath, parent)  # nothing outside `parent` is touched
        removed = True
        for root in self.removal_roots():
            removed = _rmdir_if_empty(at_text(root, relpath)) and removed
        return removed

    def remove_empty_ancestors(self, relpaths: Collection[str], parent: str) -> None:
        """The ancestors below `parent` of these removed cgroups that are left empty, deepest
        first: looked at once for a batch (a thousand containers of a stack share one)."""
        self._remove_empty(self._ancestors_of(relpaths, parent))

    def _ancestors_of(self, relpaths: Collection[str], parent: str) -> list[str]:
        """The distinct ancestors below `parent` of these cgroups, deepest first."""
        return sorted({a for relpath in relpaths for a in self._ancestors_below(relpath, parent)},
                      key=lambda ancestor: ancestor.count("/"), reverse=True)

    def _remove_empty(self, ancestors: Sequence[str]) -> None:
        for root in self.removal_roots():
            for path in map(partial(at_text, root), ancestors):
                if os.path.isdir(path) and not _has_children(path):
                    _remove_tree(path)

    def mark_parent(self, parent: str) -> None:
        """Mark the parent as made by reconcile (names.CGROUP_PARENT_MARK) wherever it is."""
        attribute, value = names.CGROUP_PARENT_MARK
        for top in (at(root, parent) for root in self.removal_roots()):
            with contextlib.suppress(FileNotFoundError):
                os.setxattr(top, attribute, value)

    def marked_parent(self, parent: str) -> bool:
        """Whether the parent carries reconcile's mark in some hierarchy."""
        attribute, value = names.CGROUP_PARENT_MARK
        for top in (at(root, parent) for root in self.removal_roots()):
            try:
                if os.getxattr(top, attribute) == value:
                    return True
            except OSError:  # not there, or no such attribute (ENODATA)
                continue
        return False

    def remove_parent(self, parent: str) -> None:
        """Remove the parent itself (its last level only: the levels above may be anyone's) once
        it is empty in every hierarchy. A cgroup or a process in it in any hierarchy, ours or
        not, keeps it everywhere."""
        tops = [top for top in (at(root, parent) for root in self.removal_roots()) if top.is_dir()]
        if any(_has_children(top) or read_text(top / "cgroup.procs") for top in tops):
            return
        for top in tops:
            _remove_tree(top)

    def containers_of(self, parent: str, stack: str) -> set[str]:
        """The containers with a cgroup <parent>/<stack>/<container> in any hierarchy."""
        return {name for root in self.removal_roots() for name in _named_dirs(at(root, parent) / stack, KEY_PATTERN)}

    def owned(self, parent: str, among: Collection[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
        """(stack, container) of every cgroup <parent>/<stack>/<container>, in any hierarchy:
        what is ours even when the state store has been lost. `among`: only those of these
        (a stat each, not a listing of every stack)."""
        return set(self._found_in(parent, among))

    def read_owned(self, parent: str,
                   among: Collection[tuple[str, str]] | None = None) -> dict[tuple[str, str], Limits | None]:
        """read() of every cgroup owned() finds: the listings that found them say which
        hierarchies hold each, so no cgroup is looked for twice (a thousand containers in five
        hierarchies: 5,000 stat calls less a pass)."""
        roots = self.roots()
        parents: dict[str, str | None] = {}  # a stack's containers share their parent's CPUs: read once

        def read(relpath: str) -> Limits:
            stack_level = relpath.rsplit("/", 1)[0]
            if stack_level not in parents:
                parents[stack_level] = self._parent_cpus(relpath)
            return self._read_present(relpath, parents[stack_level])

        return {key: read(names.cgroup_relpath(parent, *key)) if all(r in held for r in roots)
                else None for key, held in self._found_in(parent, among).items()}

    def _found_in(self, parent: str,
                  among: Collection[tuple[str, str]] | None) -> dict[tuple[str, str], set[Path]]:
        """owned()'s cgroups, each with the hierarchy roots it is in."""
        found: dict[tuple[str, str], set[Path]] = {}
        for root in self.removal_roots():  # what a crash left in the runtime's hierarchies too
            if among is not None:
                keys = [key for key in among if os.path.isdir(at_text(root, names.cgroup_relpath(parent, *key)))]
            else:
                top = at(root, parent)
                keys = [(stack, container) for stack in _named_dirs(top, NAME_PATTERN)
                        for container in _named_dirs(top / stack, KEY_PATTERN)]
            for key in keys:
                found.setdefault(key, set()).add(root)
        return found

    def _cpuset_shown(self, relpath: str, cpuset: str | None) -> str | None:
        """The parent's CPUs are read only for a cpuset to compare with them: a whole pass
        normalises every container's limits, and most have none."""
        return None if cpuset is None else shown_cpuset(cpuset, self._parent_cpus(relpath))

    def _refusal(self, relpath: str, limits: Limits, knob: Knob, exc: OSError) -> CgroupError:
        """The kernel's refusal of one knob, said in terms of the limit asked for."""
        if knob.field == "memory" and exc.errno == errno.EBUSY:
            usage = self.usage(relpath)
            return below_usage(relpath, limits.memory, usage.memory_bytes if usage else None,
                               "the kernel refused (EBUSY)")
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return CgroupError(f"{knob.field} {getattr(limits, knob.field)} of {relpath}: the kernel refused "
                           f"{knob.value!r} in {knob.path.name} ({code}: {exc.strerror})")

    @staticmethod
    def _restore(done: Sequence[tuple[Path, str]], error: CgroupError) -> None:
        """Undo writes in reverse order: each step back is one the kernel accepted going forward."""
        for path, old in reversed(done):
            try:
                write_text(path, old)
            except OSError as exc:
                error.args = (f"{error.args[0]}; restoring {old!r} in {path} failed too "
                              f"({exc.strerror}): the limits are partly changed",)
                return

    @staticmethod
    def _ancestors_below(relpath: str, parent: str) -> list[str]:
        """The cgroup's ancestors strictly below `parent`, deepest first."""
        parts, top = parts_of(relpath), parts_of(parent)
        if parts[:len(top)] != top or len(parts) == len(top):
            raise CgroupError(f"cgroup {relpath!r} is not below the parent {parent!r}")
        return ["/".join(parts[:n]) for n in range(len(parts) - 1, len(top), -1)]


def shown_cpuset(cpuset: str | None, parent_cpus: str | None) -> str | None:
    """A cpuset as the spec says it: none when it is all the CPUs the parent may run on."""
    return None if cpuset == parent_cpus else cpuset


def shown_shares(shares: int | None) -> int | None:
    """CPU shares as the spec says them: none when they are the default."""
    return None if shares == DEFAULT_CPU_SHARES else shares


def below_usage(relpath: str, memory: int | None, used: int | None, why: str) -> CgroupError:
    """A memory limit under what the cgroup holds and cannot give back: the same words on v1
    (the kernel refuses) and v2 (we refuse, as the kernel would OOM-kill instead)."""
    return CgroupError(f"memory {memory} is below the current usage {'?' if used is None else used} "
                       f"of {relpath}; {why}")


def _rmdir_if_empty(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise CgroupError(f"cannot remove cgroup {path}: {exc.strerror}") from exc
    return True


def _remove_tree(path: str | Path) -> None:
    """rmdir bottom-up: cgroupfs refuses to remove a cgroup that still has children."""
    for directory, _, _ in os.walk(path, topdown=False):
        try:
            _rmdir(directory)
        except OSError as exc:
            pids = " ".join((read_text(f"{directory}/cgroup.procs") or "").split())
            held = f" (processes still in it: {pids})" if pids else ""
            raise CgroupError(f"cannot remove cgroup {directory}: {exc.strerror}{held}") from exc


def _named_dirs(path: Path, pattern: re.Pattern[str]) -> list[str]:
    """Subdirectories whose names could be ours (stack names or container keys, as `pattern`
    says): a foreign name is never ours."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    return [entry.name for entry in entries
            if entry.is_dir(follow_symlinks=False) and pattern.fullmatch(entry.name)]
