"""Verbs on one container: find it by name, read its log, build the command that runs inside."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from controllers.container import RUNTIME_DIR, Paths
from controllers.container_bundle import exec_process
from kernel import runtime
from kernel.runtime import CONFIG_FILE
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
    """Run argv inside the running container with the process settings it was started with
    (user and groups, workdir, environment, capabilities, no_new_privs; seccomp and cgroups come
    with the runtime's exec); returns argv's exit status."""
    name = f"{found.record.stack}/{found.record.container}"
    if not runtime.is_running(found.handle):
        raise UnknownContainer(f"container {name} is not running")
    container_id = names.runtime_id(found.record.stack, found.record.container)
    oci = Runtime.at(settings.state_dir / RUNTIME_DIR)
    if not oci.has_state(container_id):
        raise UnknownContainer(f"container {name} runs, but the runtime's state of it is lost "
                               f"({oci.root / container_id}): exec needs it; it comes back when the container "
                               f"is next recreated")
    try:
        config = json.loads((found.paths.bundle / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UnknownContainer(f"container {name}: its configuration is unreadable ({exc}): exec needs it") from None
    # Given in a file (0600, in our own directory), not on crun's command line, where every
    # user of the host could read the environment's secrets in /proc/PID/cmdline.
    stem = found.paths.root / f"exec-{os.getpid()}"  # one per exec: several may run at once
    process_file, pid_file = stem.with_suffix(".json"), stem.with_suffix(".pid")
    fd = os.open(process_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(exec_process(config, argv), f)
    try:
        return runtime.run_exec(oci.exec_command(container_id, process_file, pid_file), pid_file)
    finally:
        process_file.unlink(missing_ok=True)
