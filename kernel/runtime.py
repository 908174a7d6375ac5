"""Container processes: start one in its sandbox, find it again, stop it, run a command in it.

Spawn chain (all well-kept tools, one short-lived Python setup step):
`sh` (waits, then records the exit code) -> util-linux `nsenter --net=<sandbox>` -> util-linux
`unshare --pid --fork --mount --uts --ipc --propagation private` -> `runtime_init.py` as PID 1
(cgroups joined, hostname, read-only host root or pivot_root into a rootfs, volumes, hosts
and resolv.conf; ~15 ms with `python -S -I`) -> `tini-static` exec'd through an fd, so it
needs nothing inside the rootfs and stays PID 1, forwarding signals and reaping zombies.

No resident shim in Python: the processes left per container are the waiting `sh` (which writes
`exit` next to the log when the container ends) and `unshare`, both C programs of ~1 MB.
stdout and stderr go straight to the log file (O_APPEND); `cap_log` keeps its tail, called on
every reconcile pass.

A process is identified by pid *and* start time: a pid alone can be reused by a stranger.
Signals go through a pidfd taken after the start time was checked, so the check cannot race.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kernel import crashpoints
from kernel.procs import alive

INIT_SCRIPT = str(Path(__file__).with_name("runtime_init.py"))
TINI = "/usr/bin/tini-static"  # statically linked: runs inside any rootfs
START_TIMEOUT = 10.0
EXIT_FILE = "exit"  # DO NOT RENAME: written next to the log by the waiting shell

_WRAPPER = ('ns="$1" py="$2" init="$3" exitfile="$4"; shift 4; '
            'nsenter --net="$ns" -- unshare --pid --fork --mount --uts --ipc --propagation private '
            '-- "$py" -S -I "$init" "$@"; echo $? > "$exitfile"')
"""Runs `runtime_init.py` in fresh namespaces inside the sandbox, then records its exit code."""


class StartError(RuntimeError):
    """A container could not be started; the message says why (from inside the setup)."""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # "stack/container", for messages
    argv: list[str]
    env: dict[str, str]
    workdir: str
    user: str | None
    hostname: str
    netns_path: str
    rootfs: str | None
    mounts: list[Mount]
    cgroup_procs: list[str]
    log_path: str


@dataclass(frozen=True)
class ProcessHandle:
    pid: int
    start_time: int


def _init_args(spec: ProcessSpec, status_fd: int) -> list[str]:
    args = [str(status_fd), spec.hostname, spec.rootfs or "-", spec.workdir, spec.user or "-", TINI,
            str(len(spec.mounts))]
    for m in spec.mounts:
        args += [m.source, m.target, "ro" if m.read_only else "rw"]
    args += [str(len(spec.cgroup_procs)), *spec.cgroup_procs]
    args += [str(len(spec.env)), *(f"{k}={v}" for k, v in spec.env.items())]
    return args + spec.argv


def exit_file(log_path: str) -> Path:
    return Path(log_path).with_name(EXIT_FILE)


def exit_code(log_path: str) -> int | None:
    """The exit code of the container's last run, once it has ended."""
    try:
        return int(exit_file(log_path).read_text().strip())
    except (OSError, ValueError):
        return None


def start(spec: ProcessSpec) -> ProcessHandle:
    """Start detached (own session, survives the caller) and return once the setup inside has
    reported success; a setup failure raises StartError with its message. Thread-safe."""
    crashpoints.step("start")
    Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
    exit_file(spec.log_path).unlink(missing_ok=True)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        with open(spec.log_path, "ab") as log:
            wrapper_args = [spec.netns_path, sys.executable, INIT_SCRIPT, str(exit_file(spec.log_path))]
            proc = subprocess.Popen(
                ["sh", "-c", _WRAPPER, "rc-container", *wrapper_args, *_init_args(spec, write_end)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                pass_fds=(write_end,), close_fds=True)
        os.close(write_end)
        write_end = -1
        return _await_report(read_end, proc, spec)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _await_report(read_end: int, proc: subprocess.Popen[bytes], spec: ProcessSpec) -> ProcessHandle:
    """Wait for the setup's one-line report. The waiting shell keeps the pipe open, so EOF
    never comes: a chain that dies before reporting (no such netns...) is seen by polling."""
    deadline = time.monotonic() + START_TIMEOUT
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], 0.02)
        if ready:
            chunk = os.read(read_end, 4096)
            buffer += chunk
            if b"\n" in buffer or not chunk:
                break
        elif proc.poll() is not None:
            break
    line = buffer.decode(errors="replace").split("\n", 1)[0]
    if line.startswith("ok "):
        _, pid, start_time = line.split()
        return ProcessHandle(int(pid), int(start_time))
    if proc.poll() is None and not line:
        os.killpg(proc.pid, signal.SIGKILL)
        raise StartError(f"{spec.name}: the container did not report within {START_TIMEOUT:.0f} s")
    proc.wait()
    reason = line.removeprefix("error ") or _log_tail(spec.log_path) or f"exit code {proc.returncode}"
    raise StartError(f"{spec.name}: {reason}")


def _log_tail(log_path: str) -> str:
    try:
        lines = Path(log_path).read_text(errors="replace").strip().splitlines()
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


def stop(handle: ProcessHandle, grace: float) -> None:
    """SIGTERM to the init (tini forwards it), SIGKILL after `grace` seconds. The init is PID 1
    of the container's pid namespace: when it dies the kernel kills everything inside."""
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


def exec_argv(handle: ProcessHandle, argv: list[str], user: str | None = None) -> list[str]:
    """The command line that runs `argv` inside every namespace of the container, in its root
    and working directory, as the container's user (resolved in the container's own passwd)."""
    ids: list[str] = []
    if user is not None:
        from kernel.runtime_init import SetupError, lookup_user

        try:
            uid, gid, _ = lookup_user(user, root=f"/proc/{handle.pid}/root")
        except SetupError as exc:
            raise StartError(str(exc)) from None
        ids = ["--setuid", str(uid), "--setgid", str(gid)]
    return ["nsenter", "--target", str(handle.pid), "--all", "--root", "--wd", *ids, "--", *argv]


def cap_log(log_path: str, max_bytes: int) -> None:
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
