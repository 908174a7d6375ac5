"""Container processes: start one through the OCI runtime, find it again, stop it, run a command
in it.

Process tree per container: `sh` (waits, then writes the exit status next to the log) -> `crun
run` in the foreground (the container's parent: exit status 128+N for a signal, 137 for
SIGKILL) -> the container's init, Debian's `tini-static` bound in at /dev/init (signal
forwarding and zombie reaping, so SIGTERM stops programs without a handler) -> the program.
stdout and stderr go straight to the log file (O_APPEND); `cap_log` keeps its tail.

A process is identified by pid *and* start time: a pid alone can be reused by a stranger.
Signals go through a pidfd taken after the start time was checked, so the check cannot race.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel import crashpoints
from kernel.oci import Runtime
from kernel.procs import alive, read_proc

TINI = "/usr/bin/tini-static"  # statically linked: runs inside any root
INIT_IN_CONTAINER = "/dev/init"  # on the container's own /dev tmpfs: nothing is written to its root
START_TIMEOUT = 10.0
EXIT_WAIT = 5.0
EXIT_FILE = "exit"  # DO NOT RENAME: written next to the log by the waiting shell
PID_FILE = "pid"
CONFIG_FILE = "config.json"  # the bundle's, as the OCI runtime spec names it

_WRAPPER = 'exitfile="$1"; shift; "$@"; echo $? > "$exitfile"'
"""Runs the runtime in the foreground, then records the container's exit status."""


class StartError(RuntimeError):
    """A container could not be started; the message says why (the runtime's own words)."""


@dataclass(frozen=True)
class ProcessHandle:
    pid: int
    start_time: int


def exit_file(log_path: Path) -> Path:
    return log_path.with_name(EXIT_FILE)


def exit_code(log_path: Path) -> int | None:
    """The exit code of the container's last run, once it has ended."""
    try:
        return int(exit_file(log_path).read_text().strip())
    except (OSError, ValueError):
        return None


def start(runtime: Runtime, container_id: str, bundle: Path, config: Mapping[str, Any], log_path: Path,
          name: str) -> ProcessHandle:
    """Write the bundle's config.json, start the container detached (own session, survives the
    caller) and return once the runtime has created it; a failure raises StartError with the
    runtime's message. Thread-safe."""
    crashpoints.step("start")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    exit_file(log_path).unlink(missing_ok=True)
    pid_file = bundle / PID_FILE
    pid_file.unlink(missing_ok=True)
    # 0600: the environment in it may hold secrets.
    fd = os.open(bundle / CONFIG_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            ["sh", "-c", _WRAPPER, "rc-container", str(exit_file(log_path)),
             *runtime.run_command(container_id, bundle, pid_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)
    return _await_pid(proc, pid_file, log_path, name)


def _await_pid(proc: subprocess.Popen[bytes], pid_file: Path, log_path: Path, name: str) -> ProcessHandle:
    """The runtime writes the pid file once the container exists (namespaces, cgroups, root);
    a failure before that ends the runtime with its message in the log."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.001
    while time.monotonic() < deadline:
        handle = _read_pid_file(pid_file)
        if handle is not None:
            return handle
        if proc.poll() is not None:
            handle = _read_pid_file(pid_file)  # created, and already gone: it ran
            if handle is not None:
                return handle
            raise StartError(f"{name}: {_log_tail(log_path) or f'the runtime exited {proc.returncode}'}")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise StartError(f"{name}: the runtime did not create the container within {START_TIMEOUT:.0f} s")


def _read_pid_file(pid_file: Path) -> ProcessHandle | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        return None  # being written
    proc = read_proc(int(text))
    return ProcessHandle(proc.pid, proc.start_time) if proc is not None else ProcessHandle(int(text), -1)


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def is_running(handle: ProcessHandle) -> bool:
    return alive(handle.pid, handle.start_time)


def open_pidfd(handle: ProcessHandle) -> int | None:
    """A pidfd for exactly this process, or None if it is gone (or the pid was reused)."""
    try:
        fd = os.pidfd_open(handle.pid)
    except ProcessLookupError:
        return None
    if not is_running(handle):  # checked after the pidfd pins the process: no race
        os.close(fd)
        return None
    return fd


def stop(handle: ProcessHandle, grace: float, log_path: Path) -> None:
    """SIGTERM to the init (tini forwards it), SIGKILL after `grace` seconds. The init is PID 1
    of the container's pid namespace: when it dies the kernel kills everything inside. Returns
    once the runtime has cleaned up after it (the exit status is written), so the caller can
    take the root and cgroup away."""
    crashpoints.step("stop")
    fd = open_pidfd(handle)
    if fd is None:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not select.select([fd], [], [], grace)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], 5.0)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
    deadline = time.monotonic() + EXIT_WAIT
    while exit_code(log_path) is None and time.monotonic() < deadline:
        time.sleep(0.005)


def cap_log(log_path: Path, max_bytes: int) -> None:
    """Keep the newest half of a log that outgrew `max_bytes` (copy-truncate: the container
    keeps appending through its O_APPEND descriptor)."""
    try:
        with open(log_path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= max_bytes:
                return
            f.seek(size - max_bytes // 2)
            tail = f.read()
            f.seek(0)
            f.truncate()
            f.write(tail)
    except FileNotFoundError:
        return


def run_exec(command: list[str], pid_file: Path) -> int:
    """Run the runtime's exec command with our stdio and return its exit status. A guard process
    outlives this one: if we are killed (SIGKILL included), it kills the runtime's exec and what
    it started, so nothing of a dead `reconcile exec` keeps running in the container."""
    pid_file.unlink(missing_ok=True)
    proc = subprocess.Popen(command, close_fds=True)
    alive_r, alive_w = os.pipe()
    guard = os.fork()
    if guard == 0:  # the guard: EOF on the pipe without "done" means we died
        os.close(alive_w)
        _guard(alive_r, proc.pid, pid_file)
    os.close(alive_r)
    while True:
        try:
            status = proc.wait()
            break
        except KeyboardInterrupt:  # the runtime forwards it to the process: wait for its end
            continue
    os.write(alive_w, b"done")
    os.close(alive_w)
    os.waitpid(guard, 0)
    pid_file.unlink(missing_ok=True)
    return status


def _guard(alive_r: int, runtime_pid: int, pid_file: Path) -> None:
    for fd in (0, 1, 2):  # hold none of the caller's pipes open
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if os.read(alive_r, 4) != b"done":
        with suppress(ProcessLookupError):
            os.kill(runtime_pid, signal.SIGKILL)  # our child until we died: not a reused pid
        deadline = time.monotonic() + 1.0
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        _kill_tree(_read_pid_file(pid_file))
        pid_file.unlink(missing_ok=True)
    os._exit(0)


def _kill_tree(handle: ProcessHandle | None) -> None:
    """SIGKILL a process and every descendant (children first found, then killed top-down:
    a killed parent's children are reparented to the container's init, not lost)."""
    if handle is None or not is_running(handle):
        return
    pending, found = [handle.pid], []
    while pending:
        pid = pending.pop()
        found.append(pid)
        for task in _tasks(pid):
            try:
                pending += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                continue
    for pid in found:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
