"""Container observations shaped as ContainerController.observe() fills them on a real host (no
tests here): a process found in its sandbox with its store record, one that exited (its root
still mounted, its exit file read), one whose record the store lost, one run by another
process than its record names, a started file read, and what a crash leaves (a files
directory, a root mount, the runtime's state) with no process and no record. The
per-container files are what the controller writes for the given Desired, so a snapshot built
from the Desired a diff runs against is in sync until a test drifts it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from controllers.base import Desired
from controllers.container import ContainerObservation, ObservedContainer, Paths, started_spec
from controllers.container_files import HostResolvers, hosts_files, resolv_file
from kernel.runtime import ProcessHandle
from specs import capabilities
from specs.images import pinned_digest
from state.store import ContainerRecord

STATE_DIR = Path("/var/lib/reconcile")
HOST_RESOLVERS = HostResolvers("/etc/resolv.conf", "nameserver 10.0.0.2\nsearch corp.example\n",
                               "/run/systemd/resolve/resolv.conf", "")
"""A host naming a reachable nameserver: containers get its file as it is."""
STARTED_AT = 1_700_000_000.0


def root_of(stack: str, container: str) -> str:
    """Where the container's overlay root is mounted on the host (the bundle's rootfs)."""
    return str(Paths.of(STATE_DIR, stack, container).rootfs)


def record_of(desired: Desired, stack: str, container: str, handle: ProcessHandle) -> ContainerRecord:
    """The store's record of a start with this Desired (as ContainerController._record writes it)."""
    spec = desired.stacks[stack].containers[container]
    signal = {} if spec.stop_signal in (None, "SIGTERM") else {"stop_signal": spec.stop_signal}
    return ContainerRecord.of(stack, container, handle.pid, handle.start_time,
                              {**started_spec(desired.stacks[stack], container, desired.addresses),
                               "stop_grace": spec.stop_grace, **signal}, 0, STARTED_AT)


def running(desired: Desired, stack: str, container: str, pid: int = 4242) -> ObservedContainer:
    """A process found as the init of its sandbox's namespace, started with `desired` and
    recorded: its /etc/hosts and resolv.conf (read inside it) are those that start wrote."""
    handle = ProcessHandle(pid, 987_654)
    image = desired.stacks[stack].containers[container].image
    return ObservedContainer(stack, container, handle, record_of(desired, stack, container, handle), True,
                             hosts_files(desired.stacks[stack], desired.addresses, desired.addresses6)[container],
                             resolv_file(HOST_RESOLVERS).text, root_of(stack, container), True,
                             pinned_digest(image))


def exited(desired: Desired, stack: str, container: str, exit_code: int | None) -> ObservedContainer:
    """A recorded container whose process ended: no process to read files in, the runtime's
    state gone with its foreground `run`, the root still mounted on the host, the exit file
    read (None: the run ended without writing it, killed with its shell)."""
    return replace(running(desired, stack, container), handle=None, in_sandbox=False, hosts=None, resolv=None,
                   runtime_state=False, exit_code=exit_code)


def lost_record(found: ObservedContainer) -> ObservedContainer:
    """`found` with the state store's record gone (a new store, a deleted state file)."""
    return replace(found, record=None)


def with_record_spec(found: ObservedContainer, drop: tuple[str, ...] = (), **fields: object) -> ObservedContainer:
    """`found` as started with another spec: recorded `fields` replaced, `drop` absent (a record
    written by an earlier version of reconcile)."""
    assert found.record is not None
    spec = {name: value for name, value in found.record.spec.items() if name not in drop}
    return replace(found, record=replace(found.record, spec_json=json.dumps({**spec, **fields})))


def another_process(found: ObservedContainer, pid: int = 555) -> ObservedContainer:
    """`found` run by another process than its record names: a start killed after the runtime
    started it and before its record was saved (the record is the run before's)."""
    return replace(found, handle=ProcessHandle(pid, 123_456))


def with_started(found: ObservedContainer, desired: Desired, **fields: object) -> ObservedContainer:
    """`found` with its started file read (observe() reads it where the record does not settle
    it), naming a start with `desired`, `fields` replaced."""
    spec = record_of(desired, found.stack, found.container, ProcessHandle(0, 0)).spec
    return replace(found, started={**spec, **fields})


def leftover(stack: str, container: str, root: bool = False, runtime_state: bool = False,
             image_digest: str | None = None) -> ObservedContainer:
    """What a run killed mid-start leaves: its files directory, maybe its root's mount (with
    the image mark) and the runtime's state, with no process and no record (so no exit code)."""
    return ObservedContainer(stack, container, None, None, False, None, None,
                             root_of(stack, container) if root else None, runtime_state,
                             image_digest if root else None)


def observation(*containers: ObservedContainer,
                resolvers: HostResolvers = HOST_RESOLVERS) -> ContainerObservation:
    """One observe() pass: the containers by "stack/container", on a host with every
    capability in its bounding set and every tool a start needs."""
    return ContainerObservation({f"{c.stack}/{c.container}": c for c in containers}, resolvers,
                                frozenset(capabilities.ALL))
