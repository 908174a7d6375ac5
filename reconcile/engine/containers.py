"""Verbs on one container: find it by name, read its log, build the command that runs inside."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from controllers.container import Paths
from kernel import runtime
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


def exec_command(found: Found, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run argv inside the running container."""
    if not runtime.is_running(found.handle):
        raise UnknownContainer(f"container {found.record.stack}/{found.record.container} is not running")
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOSTNAME": str(found.record.spec.get("hostname", "")), "container": "reconcile"}
    spec_env = found.record.spec.get("env")
    if isinstance(spec_env, dict):
        env.update({str(k): str(v) for k, v in spec_env.items()})
    user = found.record.spec.get("user")
    return runtime.exec_argv(found.handle, argv, user if isinstance(user, str) else None), env
