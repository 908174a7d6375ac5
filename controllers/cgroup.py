"""cgroup limits: one cgroup per container at <cgroup-parent>/<stack>/<container>, made (with its
limits) before the container's process starts, changed in place while it runs.

Ownership is the path itself (specs.names.cgroup_relpath): a fresh process finds every cgroup
of ours under the parent, so orphans are pruned even when the state store is lost. Observed
limits are read back in the spec's shape and the desired ones normalised the way the kernel
stores them (memory in pages, quota in microseconds), so an unchanged spec diffs empty.

The runtime's own processes (the waiting shells, crun, the log writers) sit beside the
containers' cgroups, in <stack>/_monitor, in every hierarchy of the host: out of the caller's
cgroups (a session scope that ends kills what is left in it) and out of the containers' limits
(an OOM kill there must not take the process that records the exit status). The stack's monitor
goes with its last container's cgroup, before it (a run killed in between leaves a container's
cgroup, which the next run removes, never a monitor no container's change would remove). A parent
reconcile made (it was in no hierarchy; the store remembers) goes with the last cgroup in it;
one that was there before stays.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TypeVar

from controllers.base import Desired, Diff, Focus
from controllers.change import Action, Change, FieldChange
from controllers.errors import ApplyError, ApplyErrors
from kernel import procs
from kernel.cgroups import CgroupDriver, CgroupError, Limits, Usage
from kernel.cgroups_common import at
from specs import names
from specs.errors import Issue
from specs.model import Resources, Stack
from specs.validate import check_host_cpus
from state.store import Store

T = TypeVar("T")
KIND_CGROUP = "cgroup"


@dataclass(frozen=True)
class CgroupObservation:
    parent: str
    limits: Mapping[str, Limits | None]
    """By "stack/container": every cgroup of ours under the parent (None: incomplete, e.g. present
    in only some hierarchies after a crash)."""
    host_cpus: tuple[int, ...] = ()
    """The CPUs a container may be given (empty: not known, no check)."""
    usage: Mapping[str, Usage] = field(default_factory=dict)
    """Live usage by "stack/container", of the stacks a pass asks for (`status`)."""

    def owned_stacks(self) -> set[str]:
        return {key.split("/", 1)[0] for key in self.limits}


@dataclass(frozen=True)
class Placement:
    """Where a container's processes go: the runtime makes `relpath`/ctr for the container; the
    waiting shell writes "0" into each of `monitor_procs` (its stack's monitor) before it starts
    anything, and the log writer and the runtime inherit them."""

    relpath: str
    monitor_procs: tuple[str, ...]
    runtime_path: str  # the runtime's own cgroup (its linux.cgroupsPath), a child of ours
    views: Mapping[str, str]  # that cgroup as the container sees it (CgroupDriver.views)
    runtime_cgroup_tmpfs: bool  # the runtime would put the hierarchies in a tmpfs (CgroupDriver's)


def limits_of(resources: Resources) -> Limits:
    return Limits(memory=resources.memory, cpus=resources.cpus, pids=resources.pids, cpuset=resources.cpuset,
                  cpu_shares=resources.cpu_shares)


def _field_changes(old: Limits | None, new: Limits) -> tuple[FieldChange, ...]:
    """The limits that differ; for a new cgroup, those that are set."""
    before = old or Limits()
    return tuple(FieldChange(f"resources.{f.name}", getattr(before, f.name), getattr(new, f.name))
                 for f in fields(Limits) if getattr(before, f.name) != getattr(new, f.name))


def _wanted(stack: Stack, desired: Desired, driver: CgroupDriver, parent: str) -> tuple[dict[str, Limits], list[Issue]]:
    wanted: dict[str, Limits] = {}
    issues: list[Issue] = []
    for key in desired.containers_of(stack):
        container = stack.containers[key]
        limits = limits_of(container.resources)
        missing = driver.missing(limits)
        if missing:
            issues.append(Issue(stack.name, ("containers", key, "resources"),
                                f"this host cannot enforce it: {driver.unavailable.format(', '.join(missing))}"))
            continue
        wanted[f"{stack.name}/{key}"] = driver.normalise(names.cgroup_relpath(parent, stack.name, key), limits)
    return wanted, issues


def diff_cgroups(desired: Desired, observed: CgroupObservation, driver: CgroupDriver) -> Diff:
    """Pure apart from reading the parent's CPU list for a container that asks for a cpuset (a cpuset
    of all of them is no restriction, as the observation reports it)."""
    result = Diff()
    wanted: dict[str, Limits] = {}
    in_scope = [stack for stack in desired.stacks.values() if stack.name in desired.scope]
    for stack in in_scope:
        found, issues = _wanted(stack, desired, driver, observed.parent)
        wanted |= found
        result.issues += issues
    result.issues += check_host_cpus(in_scope, observed.host_cpus, desired.containers_of)
    for key, limits in wanted.items():
        if key not in observed.limits or observed.limits[key] is None:
            result.changes.append(Change(Action.CREATE, KIND_CGROUP, key, _field_changes(None, limits),
                                         desired=limits))
        elif observed.limits[key] != limits:
            result.changes.append(Change(Action.UPDATE, KIND_CGROUP, key,
                                         _field_changes(observed.limits[key], limits),
                                         reason="limits are changed in place", desired=limits))
    for key in observed.limits:
        if key.split("/", 1)[0] in desired.scope and key not in wanted and desired.container_in_focus(key):
            result.changes.append(Change(Action.DELETE, KIND_CGROUP, key))
    return result


class CgroupController:
    kinds = (KIND_CGROUP,)

    def __init__(self, driver: CgroupDriver, parent: str, store: Store):
        self._driver = driver
        self._parent = parent
        self._store = store
        self._monitors = threading.Lock()
        """Starts run in parallel and share their stack's monitor: the first makes it (and fills
        in a v1 cpuset's CPUs), the others find it made, so a run writes the same steps always."""

    def relpath(self, key: str) -> str:
        stack, container = key.split("/", 1)
        return names.cgroup_relpath(self._parent, stack, container)

    def observe(self, focus: Focus | None = None, usage_of: frozenset[str] | None = frozenset()) -> CgroupObservation:
        """`usage_of`: the stacks whose containers' live usage to read too (None: every stack's)."""
        owned = self._driver.read_owned(self._parent, focus.containers if focus else None)
        limits = {f"{stack}/{container}": found for (stack, container), found in owned.items()}
        asked = [key for key in limits if usage_of is None or key.split("/", 1)[0] in usage_of]
        live = {key: found for key in asked if (found := self._driver.usage(self.relpath(key))) is not None}
        return CgroupObservation(self._parent, {key: limits[key] for key in sorted(limits)},
                                 tuple(self._driver.usable_cpus(self._parent)), live)

    def diff(self, desired: Desired, observed: CgroupObservation) -> Diff:
        return diff_cgroups(desired, observed, self._driver)

    def apply(self, changes: Sequence[Change]) -> None:
        kept = self._clear_monitors(changes)
        errors = list(kept.values())
        # A stack whose monitor stays keeps its containers' cgroups too: the next run plans
        # their deletion again, and the monitor's with it (no run reads a monitor back alone).
        changes = [c for c in changes if not (c.action is Action.DELETE and c.key.split("/", 1)[0] in kept)]
        for change in changes:
            try:
                self._apply_one(change)
            except (CgroupError, OSError) as exc:
                errors.append(ApplyError.of(change, exc))
        deleted = [self.relpath(change.key) for change in changes if change.action is Action.DELETE]
        if deleted:
            try:
                self._driver.remove_empty_ancestors(deleted, self._parent)
            except CgroupError as exc:
                errors.append(ApplyError(f"remove the stack cgroups left empty under {self._parent}: {exc}"))
        if deleted and (self._driver.marked_parent(self._parent) or self._store.made_cgroup_parent(self._parent)):
            try:
                self._driver.remove_parent(self._parent)  # kept while anything is left in it
            except CgroupError as exc:
                errors.append(ApplyError(f"remove the cgroup parent {self._parent}: {exc}"))
            if not self._parent_exists():
                self._store.record_cgroup_parent(self._parent, made=False)
        if errors:
            raise ApplyErrors(errors)

    def _clear_monitors(self, changes: Sequence[Change]) -> dict[str, ApplyError]:
        """What the containers these changes delete leave in their stacks' monitors: a stack
        whose every container's cgroup goes loses its monitor, another keeps it without what the
        deleted ones' starts left there. The stacks whose monitor could not be removed, with why."""
        deleting: dict[str, set[str]] = {}
        for change in changes:
            if change.action is Action.DELETE:
                stack, container = change.key.split("/", 1)
                deleting.setdefault(stack, set()).add(container)
        kept: dict[str, ApplyError] = {}
        for stack, containers in sorted(deleting.items()):
            monitor = names.stack_monitor_relpath(self._parent, stack)
            if not self._driver.containers_of(self._parent, stack) <= containers:
                self._kill_leftovers(monitor, {names.runtime_id(stack, c) for c in containers})
                continue
            try:
                self._remove(monitor)
            except (CgroupError, OSError) as exc:
                kept[stack] = ApplyError(f"delete {KIND_CGROUP} {monitor} (the stack's containers' cgroups "
                                         f"are kept with it): {exc}")
        return kept

    def _kill_leftovers(self, monitor: str, runtime_ids: set[str]) -> None:
        """What the starts of these removed containers left in their stack's monitor while the
        stack's other containers run on: after their stop, only a hung runtime leaves anything
        (its waiting shell, crun, the log writer). Each start's processes share one session (its
        launching shell's, which ended at once); the waiting shell's command, as crun's, ends with
        the container's runtime id."""
        pids = self._driver.procs(monitor)
        sessions = {procs.session_of(pid) for pid in pids if procs.last_argument(pid) in runtime_ids} - {None}
        for pid in pids:
            if procs.session_of(pid) in sessions:
                _kill(pid)

    def _apply_one(self, change: Change) -> None:
        relpath = self.relpath(change.key)
        if change.action is Action.DELETE:
            # First the container's own monitor, which versions before one monitor per stack
            # made (still on hosts in the field; elsewhere an rmdir that finds nothing).
            for cgroup in (names.monitor_relpath(relpath), relpath):
                self._remove(cgroup)
            return
        assert isinstance(change.desired, Limits)
        if change.action is Action.CREATE:
            self._making(lambda: self._driver.create(relpath))
        self._driver.write(relpath, change.desired)

    def _remove(self, cgroup: str) -> None:
        if not self._driver.remove_if_empty(cgroup, self._parent):
            # The containers were stopped first (deletions run in reverse order); whatever a
            # crash left inside would keep the cgroup busy for ever.
            for pid in self._driver.procs(cgroup):
                _kill(pid)
            self._driver.remove(cgroup, self._parent)

    def ensure(self, stack: str, container: str) -> Placement:
        """The container's cgroup, which this controller's own changes made (with its limits)
        earlier in the plan, the runtime's child of it with those limits shown, and its stack's
        monitor, made here. Missing, the container's failed
        or was removed since: no container starts without its limits."""
        relpath = self.relpath(f"{stack}/{container}")
        if not all(at(root, relpath).is_dir() for root in self._driver.roots()):
            raise CgroupError(f"the cgroup {relpath} is missing (its limits were not set): not starting it")
        self._driver.show_limits(relpath)  # where the container reads them, before it starts
        monitor = names.stack_monitor_relpath(self._parent, stack)
        with self._monitors:
            monitor_procs = tuple(self._making(lambda: self._driver.create_everywhere(monitor)))
        runtime_path = names.runtime_cgroup_path(relpath)
        return Placement(relpath, monitor_procs, runtime_path, self._driver.views(runtime_path),
                         self._driver.runtime_cgroup_tmpfs)

    def _making(self, create: Callable[[], T]) -> T:
        """Make cgroups under the parent, remembering a parent this makes as ours: in the store
        before it is made (a crash right after the mkdir leaves it known), then by its mark
        (names.CGROUP_PARENT_MARK), which a lost store does not take with it."""
        fresh = not self._parent_exists()
        if fresh:
            self._store.record_cgroup_parent(self._parent, made=True)
        made = create()
        if fresh:
            self._driver.mark_parent(self._parent)
        return made

    def _parent_exists(self) -> bool:
        return any(at(root, self._parent).is_dir() for root in self._driver.removal_roots())


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
