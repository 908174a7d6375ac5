"""Verbs on one container: find it by name, read its log, build the command that runs inside."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from controllers.container import RUNTIME_DIR, Paths
from controllers.container_bundle import environment
from kernel import runtime, users
from kernel.oci import Runtime
from specs import names
from reconcile.engine.settings import Settings
from state.store import ContainerRecord, Store

FOLLOW_POLL = 0.2


class UnknownContainer(Exception):
    pass


@dataclass(frozen=True)
class Found:
    record: ContainerRecord
    paths: Paths

    @property
    def handle(self) -> runtime.ProcessHandle:
        return runtime.ProcessHandle(self.record.pid, self.record.start_time)


def find(settings: Settings, name: str) -> Found:
    """`STACK/CONTAINER`, or `CONTAINER` when only one stack has a container of that name."""
    store = Store.open_readonly(settings.state_dir)
    try:
        records = store.containers()
    finally:
        store.close()
    stack, sep, container = name.rpartition("/")
    matches = [r for (s, c), r in records.items() if c == container and (not sep or s == stack)]
    if not matches:
        raise UnknownContainer(f"no container named '{name}'")
    if len(matches) > 1:
        options = ", ".join(sorted(f"{r.stack}/{r.container}" for r in matches))
        raise UnknownContainer(f"'{name}' is ambiguous: {options}")
    record = matches[0]
    return Found(record, Paths.of(settings.state_dir, record.stack, record.container))


def read_log(found: Found, follow: bool) -> Iterator[bytes]:
    """The container's output; with `follow`, keeps yielding new output until interrupted."""
    try:
        log = open(found.paths.log, "rb")
    except FileNotFoundError:
        return
    with log:
        while True:
            chunk = log.read(65536)
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            if os.fstat(log.fileno()).st_size < log.tell():  # cap_log cut it: start over
                log.seek(0)
            time.sleep(FOLLOW_POLL)


def run_exec(settings: Settings, found: Found, argv: list[str]) -> int:
    """Run argv inside the running container, as its user, in its workdir and environment, with
    its confinement and in its cgroups (the runtime's exec); returns argv's exit status."""
    if not runtime.is_running(found.handle):
        raise UnknownContainer(f"container {found.record.stack}/{found.record.container} is not running")
    container_id = names.runtime_id(found.record.stack, found.record.container)
    oci = Runtime.at(settings.state_dir / RUNTIME_DIR)
    if not oci.has_state(container_id):
        raise UnknownContainer(f"container {found.record.stack}/{found.record.container} runs, but the runtime's "
                               f"state of it is lost ({oci.root / container_id}): exec needs it; it comes back when "
                               f"the container is next recreated")
    spec = found.record.spec
    spec_env = {str(k): str(v) for k, v in spec["env"].items()} if isinstance(spec.get("env"), dict) else {}
    env = environment(str(spec.get("hostname", "")), spec_env)
    user = spec.get("user")
    try:
        ids = users.lookup(user, Path(f"/proc/{found.handle.pid}/root")) if isinstance(user, str) else None
    except users.UnknownUser as exc:
        raise UnknownContainer(str(exc)) from None
    workdir = spec.get("workdir")
    security_opt = spec.get("security_opt")
    no_new_privs = isinstance(security_opt, list) and "no-new-privileges" in security_opt
    pid_file = found.paths.root / f"exec-{os.getpid()}.pid"  # one per exec: several may run at once
    command = oci.exec_command(container_id, argv, env, workdir if isinstance(workdir, str) else "/",
                               (ids.uid, ids.gid) if ids else None,
                               no_new_privs, pid_file)
    return runtime.run_exec(command, pid_file)
