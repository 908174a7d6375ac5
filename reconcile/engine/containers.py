"""Verbs on one container: find it by name, read its log, build the command that runs inside."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from controllers.container import RUNTIME_DIR, ObservedContainer, Paths
from controllers.container_bundle import exec_process
from kernel import runtime
from kernel.oci import Runtime, exec_status
from kernel.runtime import CONFIG_FILE
from reconcile.engine.log_tail import tail_start
from reconcile.engine.settings import Settings
from specs import names
from specs.names import native_key
from state.store import ContainerRecord, Store

FOLLOW_POLL = 0.2


class UnknownContainer(Exception):
    pass


@dataclass(frozen=True)
class Found:
    record: ContainerRecord | None  # None only from find(recorded=False): a log without a record
    paths: Paths

    @property
    def handle(self) -> runtime.ProcessHandle:
        assert self.record is not None
        return runtime.ProcessHandle(self.record.pid, self.record.start_time)


def find(settings: Settings, name: str, recorded: bool = False) -> Found:
    """`STACK/CONTAINER`, or `CONTAINER` when only one stack has a container of that name: in the
    store's records, else among the containers the kernel shows (its marks outlive a lost state
    store; a container that never started has its sandbox and its files). `recorded`: the
    caller needs the record (exec: the process settings it was started with); else a container
    with only a log at its fixed path is found too. A Compose service is found by its name as
    its file writes it too (`my_web`, running as `my-web`). What cannot be served says why."""
    store = Store.open_readonly(settings.state_dir)
    try:
        records = store.containers()
    finally:
        store.close()
    stack, sep, container = name.rpartition("/")
    spellings = (container, native_key(container))

    def named(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return sorted(k for k in keys if k[1] in spellings and (not sep or k[0] == stack))

    matches = named(records)
    observed = {} if matches else _observed(settings)
    matches = matches or named(observed)
    if not matches:
        raise UnknownContainer(f"no container named '{name}'")
    if len(matches) > 1:
        raise UnknownContainer(f"'{name}' is ambiguous: " + ", ".join(f"{s}/{c}" for s, c in matches))
    key = matches[0]
    paths = Paths.of(settings.state_dir, *key)
    record = records.get(key)
    if record is None and (recorded or not paths.log.exists()):
        raise UnknownContainer(_unrecorded("/".join(key), observed[key], paths, recorded))
    return Found(record, paths)


def _observed(settings: Settings) -> dict[tuple[str, str], ObservedContainer]:
    """Containers as the kernel shows them, with or without a record (as `status` sees them)."""
    from reconcile.engine.session import open_session  # a session's start gate probes with this module
    with open_session(settings, writable=False) as session:
        return {(c.stack, c.container): c for c in session.controllers.container.observe().containers.values()}


def _unrecorded(name: str, found: ObservedContainer, paths: Paths, recorded: bool) -> str:
    """Why a container the kernel shows, but the store has no record of, cannot be served."""
    if found.handle is None:
        error = paths.last_start_error()
        return f"container {name} did not start: {error}" if error else f"container {name} is not running"
    lost = f"container {name} runs (pid {found.handle.pid}), but the state store has no record of it"
    if recorded:
        return f"{lost}: exec needs it (`reconcile apply` adopts the running container and records it)"
    return f"{lost}, and its log {paths.log} is gone: the state dir was lost"


def read_log(found: Found, follow: bool, tail: int | None = None) -> Iterator[bytes]:
    """The container's output across the writer's rotation, oldest first: all of it, or its
    last `tail` lines. With `follow`, keeps yielding new output until the container has exited
    (its exit file: written once the writer has drained the pipe, so nothing comes after it),
    as `docker logs -f` does."""
    cursor = _LogCursor(found.paths.log)
    exited = runtime.exit_file(found.paths.log)
    first_read = cursor.read_tail(tail) if tail is not None else None  # lazy: read after the look below
    gone_since: float | None = None
    while True:
        ended = exited.exists()  # looked at before reading: what this pass reads is then complete
        yield from first_read if first_read is not None else cursor.read_new()
        first_read = None
        if ended or not follow:
            return
        if found.record is not None and not runtime.is_running(found.handle):
            # Its init is gone and no exit file came: the waiting shell died too (a reboot, a
            # kill), or is still draining the writer; either way nothing more comes after a while.
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > runtime.EXIT_WAIT:
                return
        time.sleep(FOLLOW_POLL)


class _LogCursor:
    """How far reading has got: a file, by inode (rotatelogs reuses its names, truncating), and
    an offset in it."""

    def __init__(self, log_dir: Path):
        self._log_dir = log_dir
        self._inode: int | None = None
        self._offset = 0

    def read_tail(self, lines: int) -> Iterator[bytes]:
        """The log's last `lines` lines as they are now, read from the files opened once (the
        writer's rotation meanwhile cannot move them); what is written later comes after them."""
        with ExitStack() as opened:
            logs = []
            for path in runtime.log_files(self._log_dir):
                with suppress(FileNotFoundError):
                    logs.append(opened.enter_context(open(path, "rb")))
            if not logs:
                return
            index, offset = tail_start(logs, lines)
            for log in logs[index:]:
                yield from self._read_from(log, offset)
                offset = 0

    def read_new(self) -> Iterator[bytes]:
        """What was written since the last call: the rest of the file last read, then every
        newer one (all of them on the first call)."""
        files = runtime.log_files(self._log_dir)
        inodes = [_inode(path) for path in files]
        first = inodes.index(self._inode) if self._inode in inodes else 0
        for path in files[first:]:
            try:
                log = open(path, "rb")
            except FileNotFoundError:
                continue
            with log:
                stat = os.fstat(log.fileno())
                offset = self._offset if stat.st_ino == self._inode else 0
                if stat.st_size < offset:  # truncated: the cycle came round to it again
                    offset = 0
                yield from self._read_from(log, offset)

    def _read_from(self, log: BinaryIO, offset: int) -> Iterator[bytes]:
        """`log` from `offset` to its end, the cursor following."""
        log.seek(offset)
        self._inode, self._offset = os.fstat(log.fileno()).st_ino, offset
        while chunk := log.read(65536):
            self._offset += len(chunk)
            yield chunk


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def log_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The output's lines without their newline, as UTF-8 (bytes that are not: replaced); a
    last line without a newline comes once the output ends."""
    pending = b""
    for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def run_exec(settings: Settings, found: Found, argv: list[str]) -> int:
    """Run argv inside the running container with the process settings it was started with
    (user and groups, workdir, environment, capabilities, no_new_privs; seccomp and cgroups come
    with the runtime's exec); returns argv's exit status."""
    with exec_command(settings, found, argv) as (command, pid_file, log_file):
        return exec_status(runtime.run_exec(command, pid_file), log_file)


@contextmanager
def exec_command(settings: Settings, found: Found, argv: list[str]) -> Iterator[tuple[list[str], Path, Path]]:
    """The runtime's command that runs argv in the container as `reconcile exec` does (never
    with more than the container holds), its pid file and the runtime's log; the process file
    and the log are removed afterwards."""
    record = found.record
    assert record is not None  # found as recorded: a container without a record runs nothing
    name = f"{record.stack}/{record.container}"
    if not runtime.is_running(found.handle):
        raise UnknownContainer(f"container {name} is not running")
    container_id = names.runtime_id(record.stack, record.container)
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
    # One per exec: several run at once (the agent's probes run on threads of one process).
    stem = found.paths.root / f"exec-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    process_file, pid_file, log_file = stem.with_suffix(".json"), stem.with_suffix(".pid"), stem.with_suffix(".log")
    runtime.write_private_json(process_file, exec_process(config, argv))
    try:
        yield oci.exec_command(container_id, process_file, pid_file, log_file), pid_file, log_file
    finally:
        process_file.unlink(missing_ok=True)
        log_file.unlink(missing_ok=True)
