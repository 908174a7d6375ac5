"""Containers: one OCI container (crun) per spec container, inside its sandbox namespace, on a
root of its own (an overlay: its writable layer over the host's root or its `rootfs`).

A running container is found from the kernel (the init of a pid namespace inside one of our
sandbox namespaces), cross-checked with the store's record (pid + start time, and the spec it
was started with); its root from the overlay mounts that carry our mark. The spec of each start
is also written beside its bundle before the runtime starts it (Paths.started): where the record
is not that of the process found (a start killed before its record was saved, a lost store), or
there is no process, that file tells what it was started with. The runtime's state, like our
store, is a cache: a container whose runtime state is lost keeps running and is adopted. A
change to a field the process was started with recreates it (with a fresh writable layer);
/etc/hosts, resolv.conf and hostname live in the writable layer and are rewritten in place
through the root's mount when peers change.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar

from controllers.base import Desired, Diff, Focus
from controllers.cgroup import Placement
from controllers.change import Action, Change, FieldChange
from controllers.container_bundle import BundleInputs, environment, lower_of, oci_config, sysctls_of
from controllers.container_files import HostResolvers, RenderedLines, container_resolv, hosts_files, resolv_file
from controllers.errors import ApplyError, ApplyErrors, Held, InterruptedPartway
from kernel import idmap, inroot, mountinfo, mountns, netns, overlay, procs, rlimits, runtime, seccomp, users
from kernel.durable import write_durably
from kernel.mountns import PinState
from kernel.oci import Runtime, remounts_in_place
from kernel.trees import purge, purge_left, set_aside
from specs import capabilities, names, sysctls, ulimits
from specs.errors import Issue
from specs.images import pinned_digest
from specs.model import Container, Healthcheck, Stack, Volume
from specs.signals import DEFAULT_STOP_SIGNAL, signal_number
from state import volumes
from state.images import ImageStore
from state.store import ContainerRecord, Store

KIND_CONTAINER = "container"
KIND_RUNTIME = "runtime"
RUNTIME_NAMESPACE = "mount-namespace"  # the change's key: the runtime's pinned mount namespace (kernel.mountns)
RECREATE_FIELDS = ("image", "command", "env", "rootfs", "volumes", "user", "workdir", "hostname", "networks",
                   "read_only", "privileged", "cap_add", "cap_drop", "security_opt", "userns", "logging",
                   "tmpfs", "shm_size", "ulimits", "sysctls")
"""Fields a process is started with: changing any of them needs a new process (`logging`: its
log writer takes the limits when it starts; `ulimits`: the runtime sets them before the
container's first instruction, and a process may only lower its own hard limits; `sysctls`:
the runtime writes them as it makes the namespaces, as Docker's)."""
RECORDED_IF_SET: dict[str, object] = {"shm_size": None, "ulimits": {}, "sysctls": {}}
"""Fields left out of a start's record at their default (the value here): the records of starts
made before they existed stay equal to a start of the same spec made now, so an upgrade
recreates nothing. `tmpfs` likewise, its entries with the options they set only (started_spec)."""
CONTAINERS_DIR = "containers"  # DO NOT RENAME: <state-dir>/containers/<stack>/<container>/
RUNTIME_DIR = "runtime"  # DO NOT RENAME: <state-dir>/runtime, crun's --root
SECCOMP_CACHE_DIR = "seccomp"  # compiled filters, one per capability set (a cache: renaming it recompiles)
TRASH_PREFIX = "trash-"  # <container dir>/trash-*: layers set aside by releases before REMOVED_DIR
REMOVED_DIR = "_removed"
"""DO NOT RENAME: <state-dir>/containers/_removed/, removed containers' files and recreated ones'
old layers, set aside to be purged in the background (kernel.trees). '_' cannot occur in a
stack's name, so it is never taken for a stack's directory."""
LOG_DIR = "logs"  # DO NOT RENAME: <container dir>/logs/, the log writer's files (kernel/runtime.py)
HEALTH_FILE = "health.json"  # DO NOT RENAME: <container dir>/health.json, the last probes (state/health.py)
STARTED_FILE = "started.json"  # DO NOT RENAME: <container dir>/started.json, the spec of its last start
STARTED_TEMPORARY = ".started-"  # a killed writer's leftover (kernel.durable), gone with the directory
WORKERS = 8
T = TypeVar("T")
R = TypeVar("R")
DEFAULT_STOP_GRACE = 10.0
HOST_RESOLV = Path("/etc/resolv.conf")
UPSTREAM_RESOLV = Path("/run/systemd/resolve/resolv.conf")
"""systemd-resolved's list of the servers behind its 127.0.0.53 stub: the fallback when the
host's own names only loopback nameservers (container_files.resolv_file)."""


def roots_at(state_dir: Path) -> Callable[[tuple[str, str]], str]:
    """Where each container's root is mounted, as the mount table shows it (the state dir's
    symlinks resolved): only there is a root carrying our mark ours."""
    base = os.path.realpath(state_dir / CONTAINERS_DIR)
    rootfs = Paths(Path()).rootfs
    return lambda key: f"{base}/{key[0]}/{key[1]}/{rootfs}"


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def of(cls, state_dir: Path, stack: str, container: str) -> Paths:
        return cls(state_dir / CONTAINERS_DIR / stack / container)

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def rootfs(self) -> Path:
        """The merged root, mounted here on the host (the bundle's `rootfs`)."""
        return self.bundle / "rootfs"

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def lower(self) -> Path:
        """userns: auto: the idmapped bind of the lower layer the overlay stacks on."""
        return self.root / "lower"

    @property
    def log(self) -> Path:
        """The log directory; the exit file is next to it (runtime.exit_file)."""
        return self.root / LOG_DIR

    @property
    def start_error(self) -> Path:
        """Why the last start failed, until one succeeds: a container that never ran has no
        process and no record to tell it (status and logs show it)."""
        return self.root / "start-error"

    @property
    def health(self) -> Path:
        """The health of the running process and its last probes: beside its log, so that any
        `reconcile` (status, apply, the agent) reads what another one probed."""
        return self.root / HEALTH_FILE

    @property
    def started(self) -> Path:
        """The spec its last start was made with (DesiredContainer.recorded_spec, as JSON):
        written durably before the runtime starts it, so it outlives a run killed before the
        record and a lost store. Absent for a container started by an earlier version."""
        return self.root / STARTED_FILE

    def last_start_error(self) -> str | None:
        text = _read(self.start_error)
        return text.strip() if text else None


@dataclass(frozen=True)
class ObservedContainer:
    stack: str
    container: str
    handle: runtime.ProcessHandle | None  # None: not running
    record: ContainerRecord | None
    in_sandbox: bool  # the process lives in the namespace at /run/netns/<name>
    hosts: str | None
    resolv: str | None
    root: str | None  # where its root (our overlay) is mounted on the host (overlay.Root.path)
    """None too for an exited container with a record in a focused pass: not looked for."""
    runtime_state: bool  # the OCI runtime still has state for it
    image_digest: str | None = None  # of the image its root is made of (the root's mark; None with no root)
    exit_code: int | None = None  # how its last run ended, while not running (its exit file)
    started: dict[str, object] | None = None
    """The spec its last start was made with (Paths.started), read only where the record does
    not settle it: no record, a record of another process, or no process. None too where that
    file is absent (an earlier version's start) or unreadable."""

    @property
    def recorded(self) -> bool:
        """Its record is of the process found (pid and start time): a start killed before its
        record was saved leaves the record of the run before, or none."""
        return _of_process(self.record, self.handle)

    @property
    def spec(self) -> dict[str, object] | None:
        """The spec it was started with: its started file's where that was read, else its
        record's (None: not known, as for a crash leftover or a lost store of an earlier version)."""
        if self.started is not None:
            return self.started
        return self.record.spec if self.record is not None else None


def _of_process(record: ContainerRecord | None, handle: runtime.ProcessHandle | None) -> bool:
    return (record is not None and handle is not None
            and (record.pid, record.start_time) == (handle.pid, handle.start_time))


@dataclass(frozen=True)
class ContainerObservation:
    containers: Mapping[str, ObservedContainer]  # by "stack/container"
    host_resolvers: HostResolvers
    host_capabilities: frozenset[str]  # the bounding set we start containers with
    missing_tools: tuple[str, ...] = ()  # what a start runs that this host lacks
    runtime_namespace: PinState | None = None
    """The runtime's pinned mount namespace (hybrid hosts; looked at by whole passes only)."""
    ulimit_ceilings: rlimits.Ceilings = rlimits.Ceilings({}, raisable=True)
    """The hard limits a start can set (kernel.rlimits); by default, no ceiling."""

    def owned_stacks(self) -> set[str]:
        return {c.stack for c in self.containers.values() if c.handle is not None}


@dataclass(frozen=True)
class Wait:
    """A depends_on condition that a start waits for (service_started is the start order alone)."""

    dependency: str  # a container key of the same stack
    condition: str  # service_healthy | service_completed_successfully
    required: bool
    healthcheck: Healthcheck | None  # the dependency's


Gate = Callable[[str, str, Sequence[Wait], threading.Event], None]
"""Called with (stack, container, its waits, an event set when the caller is interrupted):
returns once the container's dependencies meet their conditions, or raises why one does not
(the start fails with it), or raises Held: a gate that does not wait (the watch agent's) holds
a start whose conditions may still be met, which is then neither made nor failed, as one that
waits does when interrupted."""

INTERRUPTED = "interrupted"
"""Why a start is held (neither made nor failed) that was to begin after Ctrl-C."""


@dataclass(frozen=True)
class DesiredContainer:
    stack: str
    key: str
    container: Container
    spec: dict[str, object]  # the RECREATE_FIELDS, as recorded
    hosts: str
    resolv: str
    level: int  # depth in depends_on: containers of one level start in parallel
    capabilities: frozenset[str]  # what it holds: the spec's choice within the host's bounding set
    dns_warning: str | None = None  # why `resolv` is not the host's own nameservers
    waits: tuple[Wait, ...] = ()

    @property
    def recorded_spec(self) -> dict[str, object]:
        """What the store records of a start of it: the spec, and the stop grace period and
        signal it is to be stopped with (the spec's, else its image's, resolved by the engine).
        SIGTERM, the signal of every start before `stop_signal` was known, is left out: the
        records of those starts stay equal to it, as does the record of a start made now."""
        recorded: dict[str, object] = {**self.spec, "stop_grace": self.container.stop_grace}
        if self.container.stop_signal not in (None, DEFAULT_STOP_SIGNAL):
            recorded["stop_signal"] = self.container.stop_signal
        return recorded


def started_spec(stack: Stack, key: str, addresses: Mapping[tuple[str, str, str], IPv4Address]) -> dict[str, object]:
    container = stack.containers[key]
    data = container.model_dump(mode="json", include=set(RECREATE_FIELDS) - {"networks", "tmpfs"})
    for field, default in RECORDED_IF_SET.items():
        if data[field] == default:
            del data[field]
    if container.tmpfs:  # its options as set: an option added later leaves the records of today equal
        data["tmpfs"] = [tmpfs.model_dump(mode="json", exclude_defaults=True) for tmpfs in container.tmpfs]
    data["networks"] = {net: str(addresses[(stack.name, key, net)]) for net in stack.containers[key].networks}
    return data


def dependency_levels(stack: Stack, keys: Iterable[str]) -> dict[str, int]:
    """depends_on depth of these containers and of everything they depend on (validation
    guarantees no cycles); only theirs are worked out (a focused pass: one container of a
    thousand)."""
    levels: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in levels:
            deps = [d for d in stack.containers[key].dependencies if d in stack.containers]  # required: false
            levels[key] = 1 + max((level(d) for d in deps), default=-1)
        return levels[key]

    for key in keys:
        level(key)
    return levels


def _waits(stack: Stack, key: str) -> tuple[Wait, ...]:
    """Every dependency of the container in its stack, `service_started` ones too: met once the
    dependency has started (start order gives that in one apply), unless a gate that holds
    starts (the watch agent's) holds the dependency's own start: then it holds this one too."""
    return tuple(Wait(name, dependency.condition, dependency.required, stack.containers[name].healthcheck)
                 for name, dependency in stack.containers[key].dependencies.items() if name in stack.containers)


def _recreate_fields(old: Mapping[str, object], new: Mapping[str, object]) -> tuple[FieldChange, ...]:
    return tuple(FieldChange(f, old.get(f), new.get(f)) for f in RECREATE_FIELDS if old.get(f) != new.get(f))


SHOWN_IF_SET = ("privileged", "cap_add", "cap_drop", "security_opt", "read_only", "userns", "tmpfs", "ulimits",
                "sysctls")
"""Shown in the plan of a start unless at their default: confinement other than Docker's
default is a visible choice (a tmpfs may be `exec`; a limit may be raised: rtprio, memlock)."""
_DEFAULTS: tuple[object, ...] = (None, False, [], "host")


HOST_ROOT = "/ (the host's files, readable inside)"
"""What the plan of a start says of a container with neither `image` nor `rootfs` (v1's default)."""


def _start_fields(want: DesiredContainer) -> tuple[FieldChange, ...]:
    """What it runs, from where, and what of the host it sees or holds beyond Docker's default
    confinement: the root when it is not an image, host directories bound in, wider settings."""
    c = want.container
    root = (FieldChange("image", None, want.spec["image"]) if c.image
            else FieldChange("rootfs", None, str(c.rootfs or HOST_ROOT)))
    binds = [f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in c.volumes if v.volume_name is None]
    shown = [FieldChange(f, None, want.spec[f]) for f in SHOWN_IF_SET if want.spec.get(f) not in _DEFAULTS]
    return (root, FieldChange("command", None, want.spec["command"]),
            *([FieldChange("volumes", None, binds)] if binds else []), *shown)


def _image_moved(want: DesiredContainer, found: ObservedContainer) -> tuple[FieldChange, ...]:
    """The image a running root was made of (its mark), when the spec pins another: found even
    with the state store lost."""
    wanted = pinned_digest(want.container.image)
    if found.root is None or found.image_digest == wanted or (found.image_digest is None and wanted is None):
        return ()
    return (FieldChange("image", found.image_digest, want.container.image),)


def _start_reason(want: DesiredContainer, reason: str) -> str:
    if want.container.privileged:
        reason = f"{reason}; PRIVILEGED: every capability, no seccomp, every device"
    return _with_dns_warning(want, reason)


def _with_dns_warning(want: DesiredContainer, reason: str) -> str:
    """Said wherever the plan writes a container's resolv.conf (a start, a rewrite), as Docker
    warns when it gives a container nameservers other than the host's."""
    return f"{reason}; WARNING: {want.dns_warning}" if want.dns_warning else reason


def _lines_changed(path: str, old: str | None, new: str) -> FieldChange:
    """A file reconcile rewrites, as the lines it loses and the lines it gains ("; "-joined):
    /etc/hosts names every peer, 16 KB a container at 1,000, and a plan shows what changed."""
    before, after = (old or "").splitlines(), new.splitlines()
    gone, gained = Counter(before) - Counter(after), Counter(after) - Counter(before)
    if gone or gained:
        return FieldChange(path, "; ".join(gone.elements()) or None, "; ".join(gained.elements()) or None)
    if before != after:
        return FieldChange(path, "(the same lines in another order)", "(in order)")
    return FieldChange(path, "(the same lines, other line ends)", "(one newline each)")


def _files_reason(want: DesiredContainer, files: Sequence[FieldChange]) -> str:
    changed = {f.path for f in files}
    reason = "peers changed" if "/etc/hosts" in changed else (
        "its resolver settings or the host's changed" if _resolver_settings(want.container)
        else "the host's nameservers changed")
    return _with_dns_warning(want, reason) if "/etc/resolv.conf" in changed else reason


def _resolver_settings(container: Container) -> bool:
    return bool(container.dns or container.dns_search or container.dns_opt)


def _changed(found: ObservedContainer, fields: Sequence[FieldChange]) -> str:
    recorded = found.spec
    if recorded is not None and "privileged" not in recorded:
        return "started unconfined by an earlier version of reconcile"
    if recorded is not None and "logging" not in recorded:
        return "started without log rotation by an earlier version of reconcile"
    return ", ".join(f.path for f in fields) + " changed"


def _completed(want: DesiredContainer, found: ObservedContainer) -> bool:
    """It ran to a successful end that its restart policy does not restart: a one-shot (a
    migration, an init step) is done, as a Kubernetes Job, not waiting to run again (a change
    of its spec runs it again, as does down + apply). Known from its started file too: a lost
    store does not run a finished migration again."""
    known = found.record is not None or found.started is not None
    return known and found.exit_code == 0 and want.container.restart != "always"


def _started_otherwise(want: DesiredContainer, found: ObservedContainer) -> bool:
    """It was started with another spec than `want`'s (as far as is known: a container of
    unknown spec, a crash leftover or an earlier version's start with its record lost, is not)."""
    if found.started is not None:
        return found.started != want.recorded_spec
    return found.record is not None and not found.record.started_with(want.recorded_spec)


def _adopted_because(found: ObservedContainer) -> str:
    if found.record is None:
        return "adopt a running container (state store lost)"
    return "adopt a running container (its start was not recorded)"


def _diff_one(want: DesiredContainer, found: ObservedContainer | None) -> Change | None:
    key = f"{want.stack}/{want.key}"
    fields = _recreate_fields(found.spec or {}, want.spec) if found and _started_otherwise(want, found) else ()
    if found is not None and not any(f.path == "image" for f in fields):
        fields += _image_moved(want, found)
    if found is None or found.handle is None:
        if not fields and found is not None and _completed(want, found):
            return None
        reason = "exited" if found is not None and found.record is not None else "not running"
        if fields and found is not None:  # its writable layer was made for another spec: a new one, as a recreate
            return Change(Action.RECREATE, KIND_CONTAINER, key, fields, desired=want, observed=found,
                          reason=_start_reason(want, f"{reason}; {_changed(found, fields)}"))
        return Change(Action.CREATE, KIND_CONTAINER, key, _start_fields(want), reason=_start_reason(want, reason),
                      desired=want, observed=found)
    if not found.in_sandbox:
        return Change(Action.RECREATE, KIND_CONTAINER, key, (),
                      reason=_with_dns_warning(want, "its network namespace was replaced"),
                      disruptive=True, desired=want, observed=found)
    if fields:
        return Change(Action.RECREATE, KIND_CONTAINER, key, fields,
                      reason=_start_reason(want, _changed(found, fields)), disruptive=True,
                      desired=want, observed=found)
    files = tuple(_lines_changed(path, old, new) for path, old, new in
                  (("/etc/hosts", found.hosts, want.hosts), ("/etc/resolv.conf", found.resolv, want.resolv))
                  if old != new)
    grace = _grace_changed(want, found)
    if files or grace or not found.recorded:
        reasons = [*([_files_reason(want, files)] if files else []), *([GRACE_REASON] if grace else [])]
        return Change(Action.UPDATE, KIND_CONTAINER, key, files + grace,
                      reason=", ".join(reasons) or _adopted_because(found), desired=want, observed=found)
    return None


GRACE_REASON = "its stop grace changed: recorded, used from its next stop (no restart)"


def _grace_changed(want: DesiredContainer, found: ObservedContainer) -> tuple[FieldChange, ...]:
    """The stop grace of a running container, edited since its start (its record says the one it
    would be stopped with): recorded anew in place, as nothing about the running process changes."""
    if found.spec is None or _grace(found) == want.container.stop_grace:
        return ()
    return (FieldChange("stop_grace", _grace(found), want.container.stop_grace),)


def diff_containers(desired: Desired, observed: ContainerObservation,
                    started: frozenset[str] = frozenset(), rendered: RenderedLines | None = None) -> Diff:
    """`started`: containers this session already started, with the spec and peers of this run.
    One that exited since (or is exiting while observed) is left for `status` and `diff` to show,
    and for the watch agent's restart policy with its backoff: acting on it here would spin a
    crashing program through every pass of the apply. `rendered`: /etc/hosts lines kept from
    earlier passes (hosts_files)."""
    result = Diff()
    # Each wanted container is diffed as soon as it is worked out, and only its change is kept:
    # the desired state of a thousand in sync (a started spec each) is never held at once.
    changes: list[tuple[int, Change]] = []
    wanted_keys: set[str] = set()
    resolv = resolv_file(observed.host_resolvers)
    for stack in (s for s in desired.stacks.values() if s.name in desired.scope):
        keys = desired.containers_of(stack)
        levels = dependency_levels(stack, keys)
        hosts = hosts_files(stack, desired.addresses, desired.addresses6, keys, rendered)
        if observed.missing_tools and keys:  # said once, at the stack's first container
            result.issues.append(Issue(stack.name, ("containers", keys[0]),
                                       "this host cannot start containers: "
                                       f"{', '.join(observed.missing_tools)} not installed (scripts/setup.sh)"))
        for key in keys:
            container = stack.containers[key]
            if container.rootfs is not None and not container.rootfs.is_dir():
                result.issues.append(Issue(stack.name, ("containers", key, "rootfs"),
                                           f"{container.rootfs} is not a directory on this host"))
            for name in capabilities.unavailable(container.cap_add, observed.host_capabilities):
                result.issues.append(Issue(stack.name, ("containers", key, "cap_add"),
                                           f"this host cannot give {name}: the bounding set reconcile runs "
                                           f"with lacks it"))
            result.issues += _ulimit_issues(stack.name, key, container, observed.ulimit_ceilings)
            for index, volume in enumerate(container.volumes):
                if isinstance(volume.source, Path) and not volume.create_host_path and not volume.source.exists():
                    result.issues.append(Issue(stack.name, ("containers", key, "volumes", index),
                                               f"volume source {volume.source} does not exist on this host"))
            wanted_keys.add(f"{stack.name}/{key}")
            if f"{stack.name}/{key}" in started:
                continue
            its_resolv = container_resolv(resolv, container)
            want = DesiredContainer(
                stack.name, key, container, started_spec(stack, key, desired.addresses),
                hosts[key], its_resolv.text, levels[key],
                capabilities.effective(container.cap_add, container.cap_drop, container.privileged,
                                       observed.host_capabilities), its_resolv.warning, _waits(stack, key))
            change = _diff_one(want, observed.containers.get(f"{stack.name}/{key}"))
            if change is not None:
                changes.append((want.level, change))
    changes.sort(key=lambda leveled: leveled[0])  # dependencies first; the engine reverses for deletions
    result.changes += [change for _, change in changes]
    for key, found in observed.containers.items():
        if found.stack in desired.scope and key not in wanted_keys and desired.container_in_focus(key):
            result.changes.append(Change(Action.DELETE, KIND_CONTAINER, key, reason="no longer in the spec",
                                         observed=found))
    removed = {change.key for change in result.changes if change.action is Action.DELETE}
    result.changes[:0] = _runtime_namespace_change(observed, bool(wanted_keys), removed)
    return result


def _ulimit_issues(stack: str, key: str, container: Container, ceilings: rlimits.Ceilings) -> list[Issue]:
    """A hard limit the runtime could not set here: it would fail the start, after the old
    process of a recreate is gone."""
    issues: list[Issue] = []
    for name, limit in container.ulimits.items():
        ceiling = ceilings.of(name)
        if not ulimits.exceeds(limit.hard, ceiling):
            continue
        why = (f"reconcile's own hard limit, which this host does not let it raise (no CAP_SYS_RESOURCE): raise "
               f"it where reconcile starts (ulimit -H, a unit's Limit{name.upper()}=), or ask less"
               if not ceilings.raisable else "fs.nr_open, the kernel's most for any process")
        issues.append(Issue(stack, ("containers", key, "ulimits", name),
                            f"hard limit {ulimits.shown(limit.hard)} is above {ulimits.shown(ceiling)}, {why}"))
    return issues


def _runtime_namespace_change(observed: ContainerObservation, wanted: bool, removed: set[str]) -> list[Change]:
    """Unpinned, with the mount points pinning made, once no container of ours is left: in the
    pass that removes the last ones (`removed`: every one observed), after them (deletions run
    in reverse: this change comes first; and it follows them, so a pass that makes only some
    of them leaves it for a later one), not in a pass of its own. A removal that fails leaves
    no harm: the namespace stays alive while its crun does, and a mount point with a root
    still mounted below is kept (mountns.release). Pinned afresh, before any start, when it
    lags the host's mounts (an absent one is pinned by the first start)."""
    if observed.runtime_namespace in (None, PinState.ABSENT):
        return []
    if observed.containers.keys() <= removed and not wanted:
        return [Change(Action.DELETE, KIND_RUNTIME, RUNTIME_NAMESPACE,
                       reason="no container of ours is left to run in it",
                       follows=frozenset((KIND_CONTAINER, key) for key in observed.containers))]
    if observed.runtime_namespace is PinState.LEFT:  # the first start pins
        return []
    if observed.runtime_namespace is PinState.STALE:
        return [Change(Action.UPDATE, KIND_RUNTIME, RUNTIME_NAMESPACE,
                       reason="a mount made since on the host is not in it: pinned afresh")]
    return []


def _record(want: DesiredContainer, handle: runtime.ProcessHandle, restarts: int) -> ContainerRecord:
    return ContainerRecord.of(want.stack, want.key, handle.pid, handle.start_time, want.recorded_spec, restarts,
                              time.time())


def _group_of(change: Change) -> tuple[str, int]:
    if change.kind == KIND_RUNTIME:
        return KIND_RUNTIME, 0
    if change.action in (Action.CREATE, Action.RECREATE):
        assert isinstance(change.desired, DesiredContainer)
        return "start", change.desired.level
    return str(change.action), 0


def _groups(changes: Sequence[Change]) -> Iterator[list[Change]]:
    """Runs of consecutive changes that can be carried out together (the plan's order kept)."""
    for _, run in groupby(changes, key=_group_of):
        yield list(run)


def _made(group: Sequence[Change], failed: Sequence[ApplyError | Held]) -> list[Change]:
    """The changes of a group that were made: none when a failure names no change of its own."""
    if any(o.change is None for o in failed):
        return []
    not_made = {id(o.change) for o in failed}
    return [change for change in group if id(change) not in not_made]


def _in_parallel(work: Callable[[T], R], items: Sequence[T], stop: threading.Event | None = None,
                 finished: Callable[[list[R]], None] | None = None) -> list[R]:
    """`work` on every item, WORKERS at a time, the results in the items' order. Interrupted
    (Ctrl-C: KeyboardInterrupt in this thread), what has not begun never does, `stop` is set for
    the work under way, which gives up where it waits (a start's dependency), `finished` is
    handed what did finish (to record it), and the interruption goes on."""
    if not items:
        return []
    pool = ThreadPoolExecutor(max_workers=min(WORKERS, len(items)))
    futures = [pool.submit(work, item) for item in items]
    try:
        return [future.result() for future in futures]
    except BaseException:
        if stop is not None:
            stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        if finished is not None:
            finished([f.result() for f in futures if f.done() and not f.cancelled() and f.exception() is None])
        raise
    finally:
        pool.shutdown(wait=True)


def _grace(found: ObservedContainer) -> float:
    """The stop grace the container was started with (the spec may no longer name it)."""
    spec = found.spec
    grace = spec.get("stop_grace") if spec is not None else None
    return float(grace) if isinstance(grace, (int, float)) else DEFAULT_STOP_GRACE


def stop_signal_of(recorded: Mapping[str, object] | None) -> int:
    """The signal a container was started to be stopped with (its recorded spec's, which the
    spec or its image may since have changed: the running program expects its own); SIGTERM
    when the record names none (the default, or an earlier version's start) or is unknown."""
    name = recorded.get("stop_signal") if recorded is not None else None
    try:
        return signal_number(name) if isinstance(name, str) else signal_number(DEFAULT_STOP_SIGNAL)
    except ValueError:
        return signal_number(DEFAULT_STOP_SIGNAL)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _started_in(path: Path) -> dict[str, object] | None:
    """The spec a started file holds. Absent (an earlier version's start), unreadable or not a
    spec (a damaged disk): None, as if absent; the record, if any, then tells."""
    try:
        spec = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return spec if isinstance(spec, dict) else None


def _wipe_layer(paths: Paths, aside: Callable[[Path], None]) -> None:
    """A recreate starts from a fresh layer: the old one is set aside whole (with the trash-*
    directories an older release left), never half a layer that a restart would take for the
    container's files, and purged in the background once the run's passes are done
    (Session.converge). `aside`: sets one aside."""
    for layer in (paths.upper, paths.work, *paths.root.glob(f"{TRASH_PREFIX}*")):
        aside(layer)


def _write_network_sysctls(key: str, netns_name: str, container: Container, id_base: int) -> None:
    """The network namespace's sysctls of a container in a user namespace, which its runtime
    cannot write (container_bundle.sysctls_of); its group ids as the host's."""
    wanted = {tuple(name.split(".")): sysctls.seen_from_outside(name, value, id_base, idmap.RANGE_SIZE)
              for name, value in sysctls_of(container, True)[1].items()}
    try:
        netns.write_sysctls(netns_name, wanted)
    except OSError as exc:
        raise runtime.StartError(f"{key}: write to {exc.filename}: {exc.strerror or exc}") from exc  # as crun says


def _seed_etc(upper: Path, lowers: Sequence[Path], id_base: int, files: Mapping[str, str]) -> None:
    """Write the per-container files (/etc/hosts, resolv.conf, hostname) into the writable
    layer before it is mounted: no copy-up through the overlay, and the layer's etc/ takes the
    lower's mode. Owned by the container's root (the container may rewrite them, as Docker's).
    The layer is the container's to shape (its last run may have left `etc` a symlink to the
    host's /etc): nothing in it is followed."""
    etc = upper / "etc"
    if etc.is_symlink() or (etc.exists() and not etc.is_dir()):
        etc.unlink()  # a symlink, a file or a whiteout left by the container's last run
    if not etc.exists():
        mode = _etc_mode(lowers)
        etc.mkdir(mode=mode)
        os.chmod(etc, mode, follow_symlinks=False)  # past the umask
        os.chown(etc, id_base, id_base, follow_symlinks=False)
    etc_fd = os.open(etc, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name, text in files.items():
            with suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=etc_fd)  # whatever was there: a fresh file, never followed
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=etc_fd)
            with os.fdopen(fd, "w") as f:
                f.write(text)
                os.fchmod(f.fileno(), 0o644)
                os.fchown(f.fileno(), id_base, id_base)
    finally:
        os.close(etc_fd)


def _etc_mode(lowers: Sequence[Path]) -> int:
    """The mode of /etc as the topmost layer that has it shows it (never followed: in an image
    it may be a link to anywhere on the host)."""
    for lower in lowers:
        try:
            found = os.lstat(lower / "etc")
        except FileNotFoundError:
            continue
        return stat.S_IMODE(found.st_mode) if stat.S_ISDIR(found.st_mode) else 0o755
    return 0o755


def _subdirs(path: Path) -> list[Path]:
    """The directories in `path`, told apart by the entries' types (no stat of each)."""
    return [path / name for name in _names_of_subdirs(path)]


def _stack_dirs(containers: Path) -> list[Path]:
    """Each stack's directory in CONTAINERS_DIR (not what is set aside there)."""
    return [path for path in _subdirs(containers) if path.name != REMOVED_DIR]


def _names_of_subdirs(path: Path) -> list[str]:
    """_subdirs' names (a thousand Paths would intern a thousand names for good)."""
    try:
        with os.scandir(path) as entries:
            return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _owner_only(directory: Path) -> None:
    """Made root's alone, whatever the state dir's own mode (a state dir made beforehand, 0755):
    the containers' configurations hold their environment, their roots their setuid programs."""
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


@functools.cache
def _thermal_throttle_dirs() -> tuple[str, ...]:
    """Each CPU's, masked in every container (BundleInputs.per_cpu_masked): looked up once a
    process, as CPUs come and go far more rarely than containers start."""
    return tuple(sorted(glob.glob("/sys/devices/system/cpu/cpu*/thermal_throttle")))


def _make_host_directories(key: str, mounts: Sequence[Volume]) -> None:
    """The missing host directories of bind mounts that ask for them (create_host_path, as
    `docker run -v` makes them): root's, 0755, left in place afterwards, as Docker leaves them."""
    for volume in mounts:
        if isinstance(volume.source, Path) and volume.create_host_path:
            try:
                volume.source.mkdir(mode=0o755, parents=True, exist_ok=True)
            except OSError as exc:
                raise runtime.StartError(f"{key}: volume source {volume.source}: {exc.strerror or exc}") from exc


class ContainerController:
    kinds = (KIND_CONTAINER, KIND_RUNTIME)

    def __init__(self, store: Store, state_dir: Path, cgroups: Callable[[str, str], Placement],
                 images: ImageStore, gate: Gate, host_resolv: Path = HOST_RESOLV,
                 upstream_resolv: Path = UPSTREAM_RESOLV, rendered: RenderedLines | None = None):
        """`cgroups(stack, container)`: our cgroup of the container, made (with its limits)
        before the runtime starts anything in it, so no instruction runs unlimited, and the
        cgroups its runtime processes join. `gate`: waits for depends_on conditions (probing
        runs `exec`, which lives above the controllers). `rendered`: /etc/hosts lines kept
        across sessions (the watch agent's)."""
        self._rendered = RenderedLines() if rendered is None else rendered
        self._store = store
        self._gate = gate
        self._state_dir = state_dir
        self._cgroups = cgroups
        self._host_resolv = host_resolv
        self._upstream_resolv = upstream_resolv
        self._images = images
        self._runtime = Runtime.at(state_dir / RUNTIME_DIR)
        self._carried = (state_dir / CONTAINERS_DIR,)  # where roots are mounted: reaches the runtime's namespace
        self._started: set[str] = set()  # this session's starts (see diff_containers)
        self._failed: set[str] = set()  # this session's starts that failed, until one succeeds
        self._set_aside = False  # this session's removals or recreates set files aside (purge_set_aside)
        self._interrupted = threading.Event()  # set once the caller is interrupted: no start begins after it
        self._removed = state_dir / CONTAINERS_DIR / REMOVED_DIR  # purges lock its parent

    def observe(self, focus: Focus | None = None) -> ContainerObservation:
        """With a focus, a container's init is looked for among the processes its record names
        instead of all of /proc, then, for a sandbox still without one, at the pid the runtime
        wrote in its bundle (a start killed before its record: the record names the run before)."""
        def focused(key: tuple[str, str]) -> bool:
            return focus is None or key in focus.containers

        records = self._store.containers(focus.containers if focus else None)
        sandbox_inodes: dict[int, tuple[str, str]] = {}
        for name, owner in netns.sandboxes(focus.containers if focus else None).items():
            if (inode := procs.netns_inode(netns.path_of(name))) is not None:
                sandbox_inodes[inode] = owner
        inits = procs.inits_by_netns(sandbox_inodes, [r.pid for r in records.values()], everywhere=focus is None)
        if focus is not None and len(inits) < len(sandbox_inodes):  # read for these only: exited or unrecorded
            unseen = [inode for inode in sandbox_inodes if inode not in inits]
            started = [pid for inode in unseen if (pid := runtime.last_started_pid(
                Paths.of(self._state_dir, *sandbox_inodes[inode]).bundle)) is not None]
            inits = {**inits, **procs.inits_by_netns(unseen, started, everywhere=False)}
        found: dict[tuple[str, str], tuple[runtime.ProcessHandle, bool]] = {
            sandbox_inodes[inode]: (runtime.ProcessHandle(p.pid, p.start_time), True) for inode, p in inits.items()}
        sandbox_of = {owner: inode for inode, owner in sandbox_inodes.items()}
        for key, record in records.items():
            if key not in found and procs.alive(record.pid, record.start_time):
                # Not found as its sandbox's init: out of it (recreated, disruptively) only when
                # its own namespace is seen to be another one; a namespace that cannot be read
                # is no evidence (a watch agent's repair once recreated a healthy container so).
                seen = procs.netns_inode(f"/proc/{record.pid}/ns/net")
                found[key] = (runtime.ProcessHandle(record.pid, record.start_time),
                              seen is None or seen == sandbox_of.get(key))
        # One read of our mount table for the roots and the runtime's namespace, whose own is
        # read right after it (mountns.state compares the two): ~6 ms a read at 2,000 mounts.
        ours = mountinfo.MOUNTINFO.read_text() if focus is None else None
        namespace = self._runtime.namespace_state(self._carried, ours) if ours is not None else None
        roots = self._roots(found, records.keys(), focus, ours)
        runtime_ids = ({parsed for parsed in map(names.parse_runtime_id, self._runtime.ids()) if parsed}
                       if focus is None else
                       {key for key in focus.containers if self._runtime.has_state(names.runtime_id(*key))})
        containers: dict[str, ObservedContainer] = {}
        texts: dict[str, str] = {}  # the members of a network have the same /etc/hosts: kept once

        def files(inside: str | None) -> tuple[str | None, str | None]:
            """/etc/hosts and resolv.conf of a running container, its root opened once."""
            texts_read = inroot.read_all_in_root(inside, ("/etc/hosts", "/etc/resolv.conf")) if inside else [None, None]
            hosts, resolv = (None if text is None else texts.setdefault(text, text) for text in texts_read)
            return hosts, resolv

        file_dirs = self._file_dirs() if focus is None else {key for key in focus.containers
                                                              if Paths.of(self._state_dir, *key).root.is_dir()}
        for key in filter(focused, set(found) | set(records) | file_dirs | set(roots) | runtime_ids):
            handle, in_sandbox = found.get(key, (None, False))
            inside = f"/proc/{handle.pid}/root" if handle else None  # a Path would intern the pid
            root = roots.get(key)
            hosts, resolv = files(inside)
            its_record = records.get(key)
            # The record of the process found settles how it was started: its files are read
            # only for the others (not running: the started file beside the exit file; not
            # recorded, or a start killed before its record), so a running container in sync
            # costs no read more.
            paths = None if _of_process(its_record, handle) else Paths.of(self._state_dir, *key)
            containers["/".join(key)] = ObservedContainer(
                key[0], key[1], handle, its_record, in_sandbox, hosts, resolv,
                root.path if root else None, key in runtime_ids, root.image_digest if root else None,
                runtime.exit_code(paths.log) if paths is not None and handle is None else None,
                _started_in(paths.started) if paths is not None else None)
        resolvers = HostResolvers(str(self._host_resolv), _read(self._host_resolv) or "",
                                  str(self._upstream_resolv), _read(self._upstream_resolv) or "")
        return ContainerObservation(containers, resolvers, capabilities.from_mask(procs.bounding_set()),
                                    tuple(runtime.missing_tools()), namespace, rlimits.ceilings())

    def _roots(self, found: Mapping[tuple[str, str], tuple[runtime.ProcessHandle, bool]],
               recorded: Collection[tuple[str, str]], focus: Focus | None,
               ours: str | None) -> dict[tuple[str, str], overlay.Root]:
        """Our container roots: from the host's mount table (`ours`, read by a whole pass), or, in a
        focused pass, from the running ones' own (the host's holds a line per sandbox and container:
        ~12 ms to read and parse at a thousand, more than the rest of a restart's plan), the host's
        for the others, except an exited one with a record: its record names the image it ran (a
        root's mark stands in for it only when the store is lost), and its restart unmounts it where
        our roots are mounted. That trusts a record to name the image of the root mounted for it: a
        start that failed after mounting a recreate's new root keeps the old record until a whole
        pass (the agent's resync) sees the mark."""
        at = roots_at(self._state_dir)
        if focus is None:
            return overlay.mounted(table=ours, at=at)
        roots = {key: root for key in focus.containers if key in found
                 and (root := overlay.seen_by(found[key][0].pid, key, Paths.of(self._state_dir, *key).rootfs))}
        rest = {key for key in focus.containers - roots.keys() if key in found or key not in recorded}
        return roots | (overlay.mounted(rest, at=at) if rest else {})

    def _file_dirs(self) -> set[tuple[str, str]]:
        """(stack, container) of every files directory: a run killed between writing a
        container's files and recording it leaves one that `down` must still remove."""
        root = self._state_dir / CONTAINERS_DIR
        return {(stack.name, entry) for stack in _stack_dirs(root) for entry in _names_of_subdirs(stack)}

    def _aside(self, path: Path) -> None:
        """Set `path` aside in REMOVED_DIR, for this session's purge (purge_set_aside)."""
        if set_aside(path, self._removed):
            self._set_aside = True

    def purge_left_behind(self) -> str | None:
        """Delete now what a purge cut short or failed left in REMOVED_DIR, unless a purge is
        running (before a convergence: where a killed caller takes its purge along, each run
        deletes what the last one left). What cannot be deleted is told."""
        complaint = purge_left(self._removed, lock=self._removed.parent)
        return None if complaint is None else (
            f"files of removed containers could not be deleted from {self._removed} ({complaint}); "
            "each run tries again")

    def purge_set_aside(self) -> None:
        """Delete in the background what this session's removals and recreates set aside."""
        if self._set_aside:
            purge(self._removed, lock=self._removed.parent)
            self._set_aside = False

    def diff(self, desired: Desired, observed: ContainerObservation) -> Diff:
        return diff_containers(desired, observed, frozenset(self._started), self._rendered)

    def apply(self, changes: Sequence[Change]) -> None:
        """Starts of one dependency level run in parallel, as do consecutive removals; each
        group's records are written in one store transaction. Interrupted (Ctrl-C), it tells
        which changes were made: the groups done, and the starts of its level that finished."""
        errors: list[ApplyError] = []
        held: list[Held] = []
        made: list[Change] = []
        try:
            for group in _groups(changes):
                if group[0].kind == KIND_RUNTIME:
                    failed: list[ApplyError | Held] = list(self._runtime_namespace(group))
                elif group[0].action is Action.DELETE:
                    failed = list(self._remove(group))
                elif group[0].action in (Action.CREATE, Action.RECREATE):
                    failed = self._start_level(group)
                else:
                    failed = list(self._update(group))
                errors += [o for o in failed if isinstance(o, ApplyError)]
                held += [o for o in failed if isinstance(o, Held)]
                made += _made(group, failed)
        except InterruptedPartway as exc:  # a level's starts, some finished
            raise InterruptedPartway([*made, *exc.made]) from None
        except KeyboardInterrupt:
            raise InterruptedPartway(made) from None
        if errors or held:
            raise ApplyErrors(errors, held)

    def _start_level(self, changes: Sequence[Change]) -> list[ApplyError | Held]:
        """Start independent containers in parallel (spawning is mostly waiting on the kernel);
        what failed, and the starts their gate held back. Interrupted, the starts that finished
        are recorded and named (InterruptedPartway)."""
        # Pinned if none is; whether it lags is a whole pass's question.
        failed = self._in_namespace(changes, lambda: self._runtime.pin_namespace(self._carried))
        if failed:
            return list(failed)
        for private in (CONTAINERS_DIR, RUNTIME_DIR):
            _owner_only(self._state_dir / private)
        bases = self._id_bases(changes)
        filters = self._seccomp_filters(changes)
        finished: list[ContainerRecord | ApplyError | Held] = []
        try:
            outcomes = _in_parallel(lambda change: self._try_start(change, bases.get(change.key), filters), changes,
                                    self._interrupted, finished.extend)
        except KeyboardInterrupt:
            self._record_started(finished)
            keys = {f"{o.stack}/{o.container}" for o in finished if isinstance(o, ContainerRecord)}
            raise InterruptedPartway([change for change in changes if change.key in keys]) from None
        self._started.update(f"{o.stack}/{o.container}" for o in outcomes if isinstance(o, ContainerRecord))
        for change, outcome in zip(changes, outcomes):
            if isinstance(outcome, ApplyError):
                self._failed.add(change.key)
            else:
                self._failed.discard(change.key)
        self._record_started(outcomes)
        return [o for o in outcomes if isinstance(o, (ApplyError, Held))]

    def _record_started(self, outcomes: Sequence[ContainerRecord | ApplyError | Held]) -> None:
        self._store.record_containers([o for o in outcomes if isinstance(o, ContainerRecord)])

    def _runtime_namespace(self, changes: Sequence[Change]) -> list[ApplyError]:
        if changes[0].action is Action.DELETE:
            return self._in_namespace(changes, lambda: self._runtime.release_namespace(self._carried))
        return self._in_namespace(changes, lambda: self._runtime.pin_namespace(self._carried, fresh=True))

    @staticmethod
    def _in_namespace(changes: Sequence[Change], work: Callable[[], None]) -> list[ApplyError]:
        """`work` on the runtime's pinned namespace; its failure is each change's."""
        try:
            work()
        except mountns.MountNamespaceError as exc:
            return [ApplyError.of(c, exc) for c in changes]
        return []

    def _remove(self, changes: Sequence[Change]) -> list[ApplyError]:
        """Stop in parallel (each may wait out its grace period), then take away what each
        leaves: the runtime's state, the root's mount, the writable layer and the files."""
        found = [c.observed for c in changes if isinstance(c.observed, ObservedContainer)]
        # Every one is signalled first: a thousand stops then take one grace period, not one per
        # worker's turn, and the runtime cleans up after all of them at once. One whose process
        # was gone by then has nothing left to stop.
        signalled_at = time.monotonic()
        stopping = [f if f.handle is None or runtime.signal_stop(f.handle, stop_signal_of(f.spec))
                    else replace(f, handle=None) for f in found]
        outcomes = _in_parallel(lambda f: self._try_remove(f, signalled_at), stopping)
        self._store.forget_containers([(f.stack, f.container) for f in found])
        for stack in {f.stack for f in found}:
            with suppress(OSError):  # still holds another container's files: not the last one
                (self._state_dir / CONTAINERS_DIR / stack).rmdir()
        return [o for o in outcomes if o is not None]

    def _try_remove(self, found: ObservedContainer, signalled_at: float) -> ApplyError | None:
        """`signalled_at`: when its process (if any is left) was sent its stop signal."""
        paths = Paths.of(self._state_dir, found.stack, found.container)
        try:
            self._stop(found, signalled_at, removing=True)
            self._aside(paths.root)
        except Exception as exc:  # noqa: BLE001 - reported together
            return ApplyError(f"delete {KIND_CONTAINER} {found.stack}/{found.container}: {exc}")
        return None

    def _stop(self, found: ObservedContainer, signalled_at: float | None = None, removing: bool = False) -> None:
        """Stop the process (already signalled at `signalled_at`, if given) and release its
        root; the writable layer stays on disk. `removing`: nothing is mounted over it again,
        so the root and its lowers are detached (overlay.unmount)."""
        paths = Paths.of(self._state_dir, found.stack, found.container)
        if found.handle is not None:
            runtime.stop(found.handle, _grace(found), paths.log, signalled_at, stop_signal_of(found.spec))
        if found.runtime_state:  # left by a runtime killed before it cleaned up, or not yet gone
            self._runtime.delete(names.runtime_id(found.stack, found.container))
        overlay.unmount(paths.rootfs, removing)  # found.root, if any, is this one (roots_at)
        for bound in sorted(paths.lower.glob("[0-9]*")):  # userns: auto's idmapped lowers
            overlay.unmount(bound, removing)
        overlay.unmount(paths.lower, removing)  # where one lower was bound before images

    def _id_bases(self, changes: Sequence[Change]) -> dict[str, int]:
        """userns: auto ranges for these starts, chosen before they run in parallel: a container
        keeps the range its layer was made for (its running init's, else its layer's mark);
        others get free ones (free on this host now: every layer's mark and every running
        init's uid_map count, ours or not yet recorded). Read here, for these starts only, not
        on every observation."""
        wanting = [c for c in changes
                   if isinstance(c.desired, DesiredContainer) and c.desired.container.userns == "auto"]
        if not wanting:
            return {}
        kept = {c.key: base for c in wanting if (base := self._id_base_of(c)) is not None}
        fresh = [c.key for c in wanting if c.key not in kept]
        if not fresh:
            return kept
        used = [(base, idmap.RANGE_SIZE) for base in kept.values()] + self._used_id_ranges()
        return {**kept, **dict(zip(fresh, idmap.allocate(used, len(fresh))))}

    def _id_base_of(self, change: Change) -> int | None:
        found = change.observed if isinstance(change.observed, ObservedContainer) else None
        base = idmap.base_of_pid(found.handle.pid) if found and found.handle else None
        stack, container = change.key.split("/")
        return base if base is not None else idmap.base_of_mark(Paths.of(self._state_dir, stack, container).work)

    def _used_id_ranges(self) -> list[tuple[int, int]]:
        """Host ids taken: every layer's mark, the uid and gid maps of every user namespace a
        process is in (ours or anyone's, whole), and what /etc/subuid and /etc/subgid give users."""
        root = self._state_dir / CONTAINERS_DIR
        marks = {idmap.base_of_mark(Paths(entry).work) for stack in _stack_dirs(root) for entry in _subdirs(stack)}
        return ([(base, idmap.RANGE_SIZE) for base in marks if base is not None]
                + [span for pid in procs.user_namespace_members() for span in idmap.host_ranges_of_pid(pid)]
                + idmap.subordinate_ranges())

    def _seccomp_filters(self, changes: Sequence[Change]) -> dict[frozenset[str], bytes]:
        """The BPF of every capability set these starts need, compiled (or read from the cache)
        once, before they run in parallel."""
        sets = {c.desired.capabilities for c in changes
                if isinstance(c.desired, DesiredContainer) and not c.desired.container.privileged}
        return {caps: seccomp.filter_for(frozenset(capabilities.kernel_names(caps)),
                                         self._state_dir / SECCOMP_CACHE_DIR) for caps in sets}

    def _try_start(self, change: Change, id_base: int | None,
                   filters: Mapping[frozenset[str], bytes]) -> ContainerRecord | ApplyError | Held:
        try:
            assert isinstance(change.desired, DesiredContainer)
            self._not_held_back(change.desired)
            if change.desired.waits:  # before stopping anything: a recreate waits while the old one runs
                self._gate(change.desired.stack, change.desired.key, change.desired.waits, self._interrupted)
            if self._interrupted.is_set():
                raise Held(INTERRUPTED)
            found = change.observed if isinstance(change.observed, ObservedContainer) else None
            if found is not None:
                self._stop(found)
                if change.action is Action.RECREATE or found.spec is None:  # a layer of unknown making
                    _wipe_layer(Paths.of(self._state_dir, found.stack, found.container), self._aside)
            return self._start(change, found, id_base, filters)
        except Held as held:  # nothing done: not an error, nor a start error to show
            return held.of(change)
        except Exception as exc:  # noqa: BLE001 - reported together
            paths = Paths.of(self._state_dir, *change.key.split("/"))
            with suppress(OSError):  # the error itself is what matters: it is reported anyway
                paths.root.mkdir(parents=True, exist_ok=True)
                paths.start_error.write_text(f"{exc}\n")
            return ApplyError.of(change, exc)

    def _not_held_back(self, want: DesiredContainer) -> None:
        """Raises when a required dependency's start failed earlier in this session (an earlier
        level of this apply), as Compose starts no dependent of a dependency that failed to
        start: whatever its condition, even service_started (start order alone), the dependent
        is not started beside a dependency that is not running. A recreate keeps its old process."""
        for name, dependency in want.container.dependencies.items():
            if dependency.required and f"{want.stack}/{name}" in self._failed:
                raise runtime.StartError(f"dependency '{name}' did not start")

    def _start(self, change: Change, found: ObservedContainer | None, id_base: int | None,
               filters: Mapping[frozenset[str], bytes]) -> ContainerRecord:
        """Mount the root (an exited container's writable layer is kept, as `docker start`
        keeps it), write the per-container files into it, then run the runtime. Its waiting
        shell is forked first: its moves into the stack's cgroups (an RCU grace period, 5-15 ms)
        overlap the root's mount and the bundle's writing."""
        want = change.desired
        assert isinstance(want, DesiredContainer)
        c = want.container
        paths = Paths.of(self._state_dir, want.stack, want.key)
        placement = self._cgroups(want.stack, want.key)
        with runtime.launching(self._runtime, names.runtime_id(want.stack, want.key), paths.bundle, paths.log,
                               change.key, placement.monitor_procs,
                               runtime.LogLimits(c.logging.options.max_size, c.logging.options.max_file)) as launch:
            handle = launch.run(self._bundle_config(change, paths, placement, id_base, filters),
                                lambda: write_durably(paths.started, json.dumps(want.recorded_spec).encode(),
                                                      STARTED_TEMPORARY))
        paths.start_error.unlink(missing_ok=True)
        restarts = found.record.restarts + 1 if found and found.record and change.action is Action.CREATE else 0
        return _record(want, handle, restarts)

    def _bundle_config(self, change: Change, paths: Paths, placement: Placement, id_base: int | None,
                       filters: Mapping[frozenset[str], bytes]) -> dict[str, Any]:
        """The root mounted, the container's files and directories made: the runtime's config."""
        want = change.desired
        assert isinstance(want, DesiredContainer)
        c = want.container
        workdir = c.workdir
        assert workdir is not None  # the spec's, the image's WORKDIR, or / (Container._resolve, engine.images)
        digest = pinned_digest(c.image)
        lowers = self._image_layers(c.image, digest) if c.image is not None else [lower_of(c)]
        paths.upper.mkdir(parents=True, exist_ok=True)
        paths.work.mkdir(parents=True, exist_ok=True)
        if id_base is not None:
            os.chown(paths.upper, id_base, id_base, follow_symlinks=False)  # the root of its root
            os.chown(paths.work, id_base, id_base)  # the range's mark, out of the container's reach
        _seed_etc(paths.upper, lowers, id_base or 0, {"hosts": want.hosts, "resolv.conf": want.resolv,
                                                      "hostname": c.hostname + "\n"})
        bound: list[Path] = []
        if id_base is not None:  # each lower (an image's layers too) idmapped, read-only
            bound = [paths.lower / str(index) for index in range(len(lowers))]
            for lower, target in zip(lowers, bound):
                idmap.bind_idmapped(lower, target, id_base)
            lowers = bound
        overlay.mount(want.stack, want.key, lowers, paths.upper, paths.work, paths.rootfs, digest)
        if not inroot.find_program(paths.rootfs, c.command[0], environment(c.hostname, c.env)["PATH"],
                                   [v.target for v in c.volumes], workdir):
            raise runtime.StartError(f"{change.key}: command not found in the container: {c.command[0]}")
        if inroot.resolve(paths.rootfs, workdir) is None:  # made in the layer, as Docker makes WORKDIR
            try:
                inroot.make_dirs(paths.rootfs, workdir)
            except OSError as exc:
                raise runtime.StartError(f"{change.key}: workdir {workdir}: {exc.strerror or exc}") from exc
        named = self._named_volumes(want, paths, id_base)
        _make_host_directories(change.key, c.volumes)
        if id_base is not None:
            _write_network_sysctls(change.key, names.netns_name(want.stack, want.key), c, id_base)
        inputs = BundleInputs(
            container_id=names.runtime_id(want.stack, want.key),
            netns_path=self._runtime.netns_path(names.netns_name(want.stack, want.key)),
            cgroups_path=placement.runtime_path,
            ids=users.lookup(c.user or "0", paths.rootfs), capabilities=want.capabilities,
            seccomp_bpf=None if c.privileged else filters[want.capabilities],
            host_root=c.rootfs is None and c.image is None, hidden=(str(self._state_dir.resolve()),),
            init=runtime.INIT, init_target=runtime.INIT_IN_CONTAINER, id_base=id_base, named_volumes=named,
            hooks=self._runtime.start_hooks([paths.rootfs, *bound]), cgroup_views=placement.views,
            remount_cgroup_tmpfs=placement.runtime_cgroup_tmpfs and remounts_in_place(),
            ulimit_ceilings=rlimits.ceilings().highest, ulimit_defaults=rlimits.container_defaults(),
            per_cpu_masked=_thermal_throttle_dirs())
        return oci_config(c, inputs)

    def _named_volumes(self, want: DesiredContainer, paths: Paths, id_base: int | None) -> dict[str, str]:
        """The container's named volumes, made on its first start (state.volumes): filled from
        its root at the mount point when that root is an image or a rootfs."""
        c = want.container
        copied = c.image is not None or c.rootfs is not None
        named: dict[str, str] = {}
        for volume in c.volumes:
            if volume.volume_name is None:
                continue
            seed = inroot.resolve(paths.rootfs, volume.target) if copied else None
            named[volume.volume_name] = str(volumes.ensure(self._state_dir, want.stack, volume.volume_name,
                                                           seed, id_base or 0))
        return named

    def _image_layers(self, image: str, digest: str | None) -> list[Path]:
        """The unpacked layers of the image a container is pinned to, top first."""
        found = self._images.by_digest(digest) if digest else None
        if found is None:
            raise runtime.StartError(f"the image {image} is not in the image store: apply pulls it first")
        return self._images.lower_dirs(found)

    def _update(self, changes: Sequence[Change]) -> list[ApplyError]:
        errors: list[ApplyError] = []
        adopted: list[ContainerRecord] = []
        for change in changes:
            try:
                adopted += self._update_one(change)
            except Exception as exc:  # noqa: BLE001 - reported together, the batch goes on
                errors.append(ApplyError.of(change, exc))
        self._store.record_containers(adopted)
        return errors

    def _update_one(self, change: Change) -> list[ContainerRecord]:
        """Rewrite hosts/resolv in place; returns the record of a running container whose
        process the store has no record of (lost, or a start killed before its record: adopted
        as it is, never restarted; the diff recreates one started with another spec), or whose
        stop grace changed (its record and started file say the new one)."""
        found = change.observed
        assert isinstance(found, ObservedContainer)
        want = change.desired
        assert isinstance(want, DesiredContainer) and found.handle is not None
        # Through the root's mount on the host: writable even when the container's view of its
        # root is read-only; the container's own view otherwise (a root mounted by someone else).
        # Resolved inside that root: the container controls every name in it.
        root = Path(found.root or f"/proc/{found.handle.pid}/root")
        changed = {f.path for f in change.fields}
        for path, text in (("/etc/hosts", want.hosts), ("/etc/resolv.conf", want.resolv)):
            if path not in changed and found.recorded:  # an adopted container's are written anyway
                continue
            try:
                inroot.rewrite_in_root(root, path, text)
            except OSError as exc:
                raise ApplyError(f"{path} in the container is not a file reconcile can rewrite "
                                 f"({exc.strerror or exc}): the container replaced it") from exc
        if not found.recorded or found.record is None:
            return [_record(want, found.handle, 0)]
        if "stop_grace" not in changed:
            return []
        # The same start, its stop grace alone recorded anew (its stop signal stays the one the
        # running program was started to expect).
        spec = {**(found.spec or {}), "stop_grace": want.container.stop_grace}
        write_durably(Paths.of(self._state_dir, want.stack, want.key).started, json.dumps(spec).encode(),
                      STARTED_TEMPORARY)
        return [replace(found.record, spec_json=json.dumps(spec))]
