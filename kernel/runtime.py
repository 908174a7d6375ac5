"""Container processes: start one through the OCI runtime, find it again, stop it, run a command
in it.

Process tree per container: `sh` (waits, then writes the exit status next to the log; not our
child: see `_WRAPPER`) -> `crun run` in the foreground (the container's parent: exit status 128+N
for a signal, 137 for SIGKILL) -> the container's init, Debian's `catatonit` (Podman's init) bound in at
/dev/init (signal forwarding and zombie reaping, so SIGTERM stops programs without a handler) ->
the program. stdout and stderr go down one pipe to the shell's other child, Debian's `rotatelogs`
(Apache's, in apache2-utils), which writes them to the log directory and rotates by size through
a fixed number of files, as Docker's json-file `max-size`/`max-file`: the log is capped while no
`reconcile` runs. It is the pipe's only reader: if it dies, the container's next write fails with
EPIPE (SIGPIPE ends most programs, and the restart policy starts them again with a new writer)
instead of blocking forever on a full pipe.

A process is identified by pid *and* start time: a pid alone can be reused by a stranger.
Signals go through a pidfd taken after the start time was checked, so the check cannot race.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel import crashpoints
from kernel.oci import CRUN, Runtime
from kernel.procs import alive, read_proc

INIT = "/usr/bin/catatonit"  # statically linked: runs inside any root
"""Podman's init, rather than tini (Docker's `--init`): tini waits for signals with a 1 s timeout, so
every idle container woke once a second (1,000 wake-ups a second beside 1,000 containers);
catatonit blocks on a signalfd until something happens. Both forward signals to the program's
process group (`-g`) and reap zombies; a program that cannot be executed ends catatonit with 1
(tini said 127 or 126), which the start's check for the program (kernel.inroot) reports first. As
with Podman's `--init`, the program starts with SIGTSTP, SIGTTIN and SIGTTOU blocked."""
INIT_IN_CONTAINER = "/dev/init"  # on the container's own /dev tmpfs: nothing is written to its root
START_TIMEOUT = 10.0
EXIT_WAIT = 5.0
EXIT_POLL = 0.005
EXIT_FILE = "exit"  # DO NOT RENAME: written next to the log directory by the waiting shell
"""Its text: the exit status, then the start's process group (`STATUS PGID`; a release before
the group was added wrote the status alone)."""
ROTATELOGS = "rotatelogs"  # Debian's apache2-utils
LOG_FILE = "log"  # DO NOT RENAME: rotatelogs' cycle in the log directory: log, log.1, ..., log.N-1
CURRENT_LINK = "current"  # DO NOT RENAME: rotatelogs -L, a hard link to the file being written
WRITER_ERRORS = "writer-errors"  # the writer's own complaints (it has nowhere else to say them)
_RENUMBERING = ".renumbering-"  # a log file on its way to its new name (<prefix><name>)
PID_FILE = "pid"
PID_FILE_POLL = 0.004
"""The longest wait between two looks for the runtime's pid file: a start takes ~15-40 ms, and a
20 ms step (as this was) noticed one at 40 ms only at 51 ms (a look is a ~20 us read)."""
CONFIG_FILE = "config.json"  # the bundle's, as the OCI runtime spec names it

DOCKER_OOM_SCORE = "{ echo 0 >/proc/self/oom_score_adj; } 2>/dev/null"
"""Docker's OOM score for a container's processes (and the runtime's, which they inherit),
whatever the one of the process that starts them: crun (1.8) leaves the inherited one when the
configuration's `oomScoreAdj` is 0. Without the privilege to lower it, the inherited one stays."""

_MONITOR = (f'{DOCKER_OOM_SCORE}; joined=1; '
            'while [ "$joins" -gt 0 ]; do echo 0 > "$1" || { joined=; break; }; joins=$((joins - 1)); shift; done; '
            'IFS= read -r go; [ "$go" = go ] || exit 0; '
            f'{ROTATELOGS} -n "$files" -L "$logdir/{CURRENT_LINK}" "$logdir/{LOG_FILE}" "${{size}}B" '
            f'<&3 3<&- >/dev/null 2>"$logdir/{WRITER_ERRORS}" & exec 3<&- </dev/null; '
            'if [ "$joined" ]; then "$@"; status=$?; else status=125; fi; '
            'exec >/dev/null 2>&1; wait; echo "$status $$" > "$exitfile"')
"""The waiting shell. It moves itself into the cgroups it is given (before the runtime exists:
every process of the container inherits them; the first move waits for an RCU grace period,
5-15 ms, the others ~0.1 ms each on a hybrid host's ten hierarchies), then waits for the word
`go` on its stdin (the caller mounts the root and writes the bundle meanwhile: `Launch`; at end
of file, the start given up or the caller gone, it ends without a trace), then starts the log
writer there on fd 3 (the log pipe's read end; the shell then lets go of it, so the writer is
the pipe's only reader), runs the runtime in the foreground, lets go of the pipe and waits for
the writer to drain it, then records the container's exit status: once the exit file exists,
the log is complete. A cgroup it cannot join stops it with the shell's message in the log (the
pipe holds it until the writer is up) and 125 in the exit file (Docker's code for a container
that could not run). Beside the status it writes the start's process group (`$$`, the
launching shell's pid, is the group's ID): a start tells its own end from the late exit file
of the run before (a container restarted at once, whose old waiting shell is still draining its
log writer)."""

_WRAPPER = ('exitfile="$1"; logdir="$2"; files="$3"; size="$4"; joins="$5"; shift 5; '
            f'exec 3<&2 4<&0 2>&1; {{ exec 4<&-; {_MONITOR}; }} <&4 &')
"""The waiting shell in the background of a shell that ends at once, so that it is not our
child: the caller reaps the short-lived one and keeps nothing. A child it kept would be polled
by Python's subprocess on every later spawn (`subprocess` keeps each `Popen` dropped before its
child was reaped, and polls them all before starting another: at 1,000 containers ~0.9 ms a
spawn, measured, and a `Popen` object each in the agent). The session and process group are the
first shell's, which outlives it as their ID (a pid stays taken while a process group bears it),
so the group tells whether the start is still alive, once whoever reaps orphans (PID 1, or a
subreaper) has reaped the waiting shell: reconcile expects an init above it, as any service
manager or `docker run --init` gives. As a background job without job control the waiting
shell, and crun from it, ignore SIGINT and SIGQUIT (crun gives the container's process default
handlers). Its descriptors come as the word's pipe (stdin), the log pipe's write end (stdout)
and read end (stderr), and leave as the log pipe's write end on stdout and stderr and its read
end on fd 3 (dash redirects descriptors 0-9 only, and a descriptor passed any other way could
be numbered higher); the word's pipe becomes the background job's stdin through fd 4 (a
background job's stdin is otherwise /dev/null)."""


REQUIRED_TOOLS = {CRUN: "crun", ROTATELOGS: "apache2-utils", INIT: "catatonit"}
"""What every container start runs, and the Debian package each comes in."""


def missing_tools() -> list[str]:
    """The tools a container start needs that this host lacks, with their packages."""
    return [f"{tool} (Debian's {package})" for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None]


@dataclass(frozen=True)
class LogLimits:
    """Rotate when the file being written exceeds `max_bytes` (by at most one 64 KiB read);
    keep `max_files` files in all, the one being written included (Docker's max-file)."""
    max_bytes: int
    max_files: int


class StartError(RuntimeError):
    """A container could not be started; the message says why (the runtime's own words)."""


@dataclass(frozen=True)
class ProcessHandle:
    pid: int
    start_time: int


def exit_file(log_dir: Path) -> Path:
    return log_dir.with_name(EXIT_FILE)


def exit_code(log_dir: Path) -> int | None:
    """The exit code of the container's last run, once it has ended (and its log is complete)."""
    ended = _exit_record(log_dir)
    return None if ended is None else ended[0]


def await_exit_code(log_dir: Path) -> int | None:
    """The exit code of a run whose process is gone: the runtime cleans up after it and the
    waiting shell drains the log writer before writing it, which takes a moment more on a busy
    host. None after EXIT_WAIT seconds (the shell was killed too)."""
    deadline = time.monotonic() + EXIT_WAIT
    while (code := exit_code(log_dir)) is None and time.monotonic() < deadline:
        time.sleep(EXIT_POLL)
    return code


def _exit_record(log_dir: Path) -> tuple[int, int | None] | None:
    """(exit status, the start's process group: None from an older release) of the last run."""
    try:
        fields = [int(field) for field in exit_file(log_dir).read_text().split()]
    except (OSError, ValueError):
        return None
    if len(fields) not in (1, 2):
        return None
    return fields[0], (fields[1] if len(fields) == 2 else None)


@contextmanager
def launching(runtime: Runtime, container_id: str, bundle: Path, log_dir: Path, name: str,
              cgroup_procs: Sequence[str], log_limits: LogLimits) -> Iterator[Launch]:
    """Fork a container's waiting shell, which moves into `cgroup_procs` (cgroups of its own: it
    survives the caller) while the caller gets the root and the bundle ready; `Launch.run` then
    starts the runtime. Leaving the block without `run` (the start given up, or the caller
    gone) ends the shell before it starts anything. Thread-safe."""
    read_end, write_end = os.pipe()  # close-on-exec: no other start's processes hold them
    go_read = go_write = -1
    try:
        go_read, go_write = os.pipe()
        launcher = subprocess.Popen(
            ["sh", "-c", _WRAPPER, "rc-container", str(exit_file(log_dir)), str(log_dir),
             str(log_limits.max_files), str(log_limits.max_bytes), str(len(cgroup_procs)), *cgroup_procs,
             *runtime.run_command(container_id, bundle, bundle / PID_FILE)],
            stdin=go_read, stdout=write_end, stderr=read_end, start_new_session=True, close_fds=True)
    except BaseException:
        if go_write != -1:
            os.close(go_write)
        raise
    finally:
        for fd in (read_end, write_end, go_read):
            if fd != -1:
                os.close(fd)
    launch = Launch(bundle, log_dir, name, log_limits.max_files, launcher.pid, go_write)
    try:
        launcher.wait()  # it ends once its background job is forked (~1 ms)
        yield launch
    finally:
        launch.close()


@dataclass
class Launch:
    """A start under way (`launching`): its waiting shell waits for the word to run the runtime.
    Its moves into the cgroups (one RCU grace period) overlap the caller's work on the root."""

    bundle: Path
    log_dir: Path
    name: str
    max_files: int
    group: int
    """The start's process group (the launching shell's pid)."""
    go: int | None
    """Where the word is written; closed unsaid, the shell ends."""

    def run(self, config: Mapping[str, Any], starting: Callable[[], None] = lambda: None) -> ProcessHandle:
        """Write the bundle's config.json, let the shell start the runtime and return once the
        runtime has created the container; a failure raises StartError with the runtime's message.
        The run before's exit file and log are put aside only now, as the runtime is about to
        start: its waiting shell may still be draining its log writer while the root was made
        ready, and a start given up before this leaves its exit status as it was. `starting`
        runs right after that exit file is gone, before the runtime starts: the caller's mark of
        this start is never seen beside the run before's status (a one-shot's new spec beside
        its old `0` would say the new one is done)."""
        assert self.go is not None, "a launch runs once"
        crashpoints.step("start")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        exit_file(self.log_dir).unlink(missing_ok=True)
        starting()
        _renumber_log_files(self.log_dir, self.max_files)
        pid_file = self.bundle / PID_FILE
        pid_file.unlink(missing_ok=True)
        write_private_json(self.bundle / CONFIG_FILE, config)
        with suppress(BrokenPipeError):  # the shell is gone: _await_pid says how
            os.write(self.go, b"go\n")
        self.close()
        return _await_pid(self.group, pid_file, self.log_dir, self.name)

    def close(self) -> None:
        if self.go is not None:
            os.close(self.go)
            self.go = None


def write_private_json(path: Path, value: object) -> None:
    """A file for the runtime that holds the container's environment, which may hold secrets:
    0600. Encoded by json.dumps: json.dump always encodes in Python (3x slower on an OCI config,
    and a cycle of encoder closures left for the collector each time)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(value))


def _await_pid(group: int, pid_file: Path, log_dir: Path, name: str) -> ProcessHandle:
    """The runtime writes the pid file once the container exists (namespaces, cgroups, root);
    a failure before that ends the runtime with its message in the log, and its waiting shell
    with an exit file naming this start's process `group` (or, killed, the group with neither)."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.001
    while time.monotonic() < deadline:
        handle = _read_pid_file(pid_file)
        if handle is not None:
            return handle
        record = _exit_record(log_dir)
        code = record[0] if record is not None and record[1] == group else None  # not the run before's
        if code is not None or not _group_alive(group):
            handle = _read_pid_file(pid_file)  # created, and already gone: it ran
            if handle is not None:
                return handle
            ended = (f"the runtime exited {code}" if code is not None
                     else "the waiting shell is gone without an exit status")  # killed, or never forked
            raise StartError(f"{name}: {_log_tail(log_dir) or ended}")
        time.sleep(delay)
        delay = min(delay * 2, PID_FILE_POLL)
    os.killpg(group, signal.SIGKILL)
    raise StartError(f"{name}: the runtime did not create the container within {START_TIMEOUT:.0f} s")


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _read_pid_file(pid_file: Path) -> ProcessHandle | None:
    pid = _pid_in(pid_file)
    if pid is None:
        return None  # not yet written, or being written
    proc = read_proc(pid)
    return ProcessHandle(proc.pid, proc.start_time) if proc is not None else ProcessHandle(pid, -1)


def _pid_in(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def last_started_pid(bundle: Path) -> int | None:
    """The pid the runtime wrote for the bundle's last start: that container's init, when it
    is still running (the caller checks: the process may be gone and its pid reused)."""
    try:
        return _pid_in(bundle / PID_FILE)
    except OSError:
        return None


def _log_tail(log_dir: Path) -> str:
    """The last line of the log, after what the log writer itself said (it has nowhere else to
    say it: a full disk, an unwritable directory)."""
    files = log_files(log_dir)
    writer, last = _last_line(log_dir / WRITER_ERRORS), _last_line(files[-1]) if files else ""
    return "; ".join(([f"log writer: {writer}"] if writer else []) + ([last] if last else []))


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def log_files(log_dir: Path) -> list[Path]:
    """The log's files, oldest first. rotatelogs -n cycles through log, log.1, ..., log.N-1,
    truncating the next one when the current one is full: the files after the one being written
    (`current` links to it) are older, those before it newer. Without the link yet (a first
    start), the cycle's order is the files' order."""
    try:
        entries = sorted((e for e in os.scandir(log_dir) if _cycle_index(e.name) is not None),
                         key=lambda e: _cycle_index(e.name) or 0)
    except FileNotFoundError:
        return []
    try:
        current: int | None = os.stat(log_dir / CURRENT_LINK).st_ino
    except FileNotFoundError:
        current = None
    at = next((i for i, e in enumerate(entries) if e.inode() == current), len(entries) - 1)
    return [Path(e.path) for e in entries[at + 1:] + entries[:at + 1]]


def _cycle_index(name: str) -> int | None:
    if name == LOG_FILE:
        return 0
    stem, dot, number = name.partition(".")
    return int(number) if stem == LOG_FILE and dot and number.isdigit() and number[0] != "0" else None


def _renumber_log_files(log_dir: Path, max_files: int) -> None:
    """rotatelogs starts again at `log` (appending to it) and goes on with log.1: before it
    starts, the newest file becomes `log` and the older ones log.N-1, log.N-2, ... (N: the
    limit it starts with, which a changed max-file may have lowered; the oldest beyond it are
    removed), so the order holds across restarts. The `current` link follows the newest file.
    The moves go through temporary names that carry their target: one a crash left behind is
    put in place first (or dropped, when its place was not freed yet: one old file, not the
    order of all)."""
    for stranded in log_dir.glob(f"{_RENUMBERING}*"):
        target = log_dir / stranded.name.removeprefix(_RENUMBERING)
        if target.exists():
            stranded.unlink()
        else:
            stranded.rename(target)
    ordered = log_files(log_dir)
    for stale in ordered[:-max_files]:
        stale.unlink()
    newest_first = list(reversed(ordered[-max_files:]))
    names = [LOG_FILE, *(f"{LOG_FILE}.{index}" for index in range(max_files - 1, 0, -1))]
    moves = [(path, name) for path, name in zip(newest_first, names) if path.name != name]
    for path, name in moves:  # through temporary names: the cycle may be shifted
        path.rename(log_dir / f"{_RENUMBERING}{name}")
    for _, name in moves:
        (log_dir / f"{_RENUMBERING}{name}").rename(log_dir / name)


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


def signal_stop(handle: ProcessHandle, signum: int = signal.SIGTERM) -> bool:
    """`signum` (the container's stop signal) to exactly this process (through a pidfd: a pid
    reused meanwhile is left be); False when it was gone already."""
    crashpoints.step("stop")
    fd = open_pidfd(handle)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True


def await_exit(handle: ProcessHandle, kill_at: float) -> None:
    """Back once the process has exited: SIGKILL if it still runs at `kill_at`
    (time.monotonic()), then 5 s more at most."""
    fd = open_pidfd(handle)
    if fd is None:
        return
    try:
        if not select.select([fd], [], [], max(0.0, kill_at - time.monotonic()))[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], 5.0)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def terminate(handle: ProcessHandle, grace: float) -> bool:
    """SIGTERM, SIGKILL after `grace` seconds, and back once the process has exited. False
    when it was gone already."""
    if not signal_stop(handle):
        return False
    await_exit(handle, time.monotonic() + grace)
    return True


def stop(handle: ProcessHandle, grace: float, log_dir: Path, signalled_at: float | None = None,
         signum: int = signal.SIGTERM) -> None:
    """`signum` (the container's stop signal) to the init (which forwards it), SIGKILL after
    `grace` seconds. The init is PID 1 of the container's pid namespace: when it dies the kernel
    kills everything inside. Returns once the runtime has cleaned up after it (the exit status
    is written), so the caller can take the root and cgroup away. `signalled_at`: when
    signal_stop already sent the stop signal (containers stopped together are signalled at once,
    so their grace periods and the runtime's cleanups overlap); the grace counts from then."""
    if signalled_at is None:
        if not signal_stop(handle, signum):
            return
        signalled_at = time.monotonic()
    await_exit(handle, signalled_at + grace)
    await_exit_code(log_dir)


def _with_docker_oom_score(command: list[str]) -> list[str]:
    """The command run by a shell that first takes Docker's OOM score (DOCKER_OOM_SCORE), then
    becomes the command (the same pid)."""
    return ["sh", "-c", f'{DOCKER_OOM_SCORE}; exec "$@"', "sh", *command]


def run_exec(command: list[str], pid_file: Path) -> int:
    """Run the runtime's exec command with our stdio and return its exit status. A guard process
    outlives this one: if we are killed (SIGKILL included), it kills the runtime's exec and what
    it started, so nothing of a dead `reconcile exec` keeps running in the container."""
    pid_file.unlink(missing_ok=True)
    proc = subprocess.Popen(_with_docker_oom_score(command), close_fds=True)
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


@dataclass(frozen=True)
class Captured:
    exit_code: int | None  # None: still running at the deadline (then killed, with what it started)
    output: bytes  # stdout and stderr as they came, through one pipe, cut at the limit


def run_captured(command: list[str], pid_file: Path, timeout: float, limit: int) -> Captured:
    """Run the runtime's exec command with its output captured (the first `limit` bytes kept,
    the rest read and dropped, so a chatty command never blocks on a full pipe); past `timeout`
    the runtime's exec and the process tree it started in the container are killed. No guard
    process (fork is unsafe in a threaded caller): a caller killed meanwhile leaves the command
    to run to its end."""
    pid_file.unlink(missing_ok=True)
    proc = subprocess.Popen(_with_docker_oom_score(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, close_fds=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    output = b""
    timed_out = False
    with proc.stdout:
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output += chunk[:max(0, limit - len(output))]
        if timed_out:
            _kill_tree(_read_pid_file(pid_file))
            with suppress(ProcessLookupError):
                proc.kill()
    status = proc.wait()
    pid_file.unlink(missing_ok=True)
    return Captured(None if timed_out else status, output)


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
