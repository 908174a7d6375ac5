"""Shared plumbing for the benchmarks: a throwaway host and a timer around the real CLI."""

from __future__ import annotations

import compileall
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kernel.mountinfo import MOUNTINFO, mounts

REPO = Path(__file__).resolve().parent.parent


PACKAGES = ("reconcile", "controllers", "kernel", "state", "specs")
"""The project's own packages: installed editable, so byte-compiled only as they are imported."""


def reexec_in_throwaway_host() -> None:
    """Re-run this script inside fresh network + mount namespaces (tmpfs over /run/netns), so a
    benchmark never touches the machine's own network; everything dies with the process.
    The packages are byte-compiled first, as a user's are after their first run: under
    PYTHONDONTWRITEBYTECODE (set on some of our machines) every CLI run would otherwise compile
    ~90 modules from source, ~0.14 s of each (cProfile)."""
    if os.environ.get("RECONCILE_BENCH_SANDBOXED") == "1":
        return
    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)
    os.makedirs("/run/netns", exist_ok=True)
    env = {**os.environ, "RECONCILE_BENCH_SANDBOXED": "1"}
    # A tmpfs over /var/lib too: skopeo's blob-info cache (/var/lib/containers) dies with it.
    script = 'mount -t tmpfs tmpfs /run/netns && mount -t tmpfs tmpfs /var/lib && ip link set lo up && exec "$@"'
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            sys.executable, *sys.argv]
    raise SystemExit(subprocess.call(argv, env=env))


@dataclass(frozen=True)
class CliTimes:
    cold_apply: float
    noop_apply: float
    noop_diff: float
    down: float
    noop_diff_peak_rss_kib: int
    status_json: float | None = None
    """`status -o json PATH` with everything in place, when the round was asked to time it."""


def time_cli_round(stack_text: str, before: Sequence[Sequence[str]] = (), status: bool = False) -> CliTimes:
    """apply, apply again, diff, (`status -o json` if `status`), down of one stack through the
    real CLI, with a fresh state dir and a per-run cgroup parent (removed afterwards: cgroupfs is
    not in the throwaway host). `before`: CLI commands run first, untimed (an image pull)."""
    path = Path(tempfile.mkdtemp()) / "stack.yaml"
    path.write_text(stack_text)
    parent = f"rc-bench-{uuid.uuid4().hex[:8]}"
    state_dir = tempfile.mkdtemp(prefix="rc-bench-")
    env = {**os.environ, "RECONCILE_STATE_DIR": state_dir,
           "RECONCILE_CGROUP_PARENT": parent, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    try:
        for args in before:
            timed(reconcile(*args), env)
        cold_apply = timed(reconcile("apply", str(path)), env)
        noop_apply = timed(reconcile("apply", str(path)), env)
        noop_diff = measured(reconcile("diff", str(path)), env)
        status_json = timed(reconcile("status", "-o", "json", str(path)), env) if status else None
        return CliTimes(cold_apply=cold_apply, noop_apply=noop_apply, noop_diff=noop_diff.seconds,
                        down=timed(reconcile("down", str(path)), env),
                        noop_diff_peak_rss_kib=noop_diff.peak_rss_kib, status_json=status_json)
    finally:
        for directory in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
            directory.rmdir()  # empty after down; a failed run leaves it to be seen
        remove_state_dir(Path(state_dir))
        shutil.rmtree(path.parent, ignore_errors=True)


def remove_state_dir(state_dir: Path) -> None:
    """Delete a run's state dir. On hybrid hosts its `containers` and `runtime-ns` directories
    are bind mounts of themselves (kernel.mountns): unmounted first, or rmtree stops at them and
    the directory outlives the throwaway host on the machine's disk."""
    unmount_below(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def dying_cgroups() -> int:
    """Cgroups removed but not yet freed by the kernel: a memory cgroup lingers while its
    release runs in kernel workers (v2: cgroup.stat's count; v1: the memory controller's count
    in /proc/cgroups less the cgroups still in its hierarchy)."""
    stat = CGROUP_ROOT / "cgroup.stat"
    if stat.exists():
        return int(dict(line.split() for line in stat.read_text().splitlines())["nr_dying_descendants"])
    counts = {line.split()[0]: int(line.split()[2]) for line in Path("/proc/cgroups").read_text().splitlines()[1:]}
    live = sum(1 for _ in os.walk(CGROUP_ROOT / "memory"))
    return max(0, counts.get("memory", live) - live)


def settle_cgroups(limit: float = 300.0) -> None:
    """Wait (up to `limit` seconds) until the kernel has freed the cgroups an earlier phase
    removed: until their count stops falling for 10 s (some linger for good, held by pages
    still charged to them). After a `down` of 1,000 containers it frees a few thousand memory
    cgroups in its workers, ~10 a second, for minutes: whatever runs meanwhile competes with
    them (a drift repair measured then took up to twice as long)."""
    deadline = time.monotonic() + limit
    lowest, steady_since = dying_cgroups(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady_since < 10:
        time.sleep(2)
        now = dying_cgroups()
        if now < lowest:
            lowest, steady_since = now, time.monotonic()


def unmount_below(directory: Path) -> None:
    """Detach every mount at or below `directory` (roots, a pinned namespace, bind mounts of
    themselves), deepest first."""
    top = str(directory.resolve())
    points = {m.point for m in mounts(MOUNTINFO.read_text())
              if m.point == top or m.point.startswith(f"{top}/")}
    if points:
        subprocess.run(["umount", "--lazy", *sorted(points, key=len, reverse=True)], capture_output=True)


def timed(argv: Sequence[str], env: dict[str, str] | None = None, input: str | None = None,
          ok: Sequence[int] = (0,)) -> float:
    """Wall time of one command; fails loudly if it fails, so a broken run never prints numbers."""
    return measured(argv, env, input, ok).seconds


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_kib: int
    """The child's ru_maxrss as wait4(2) returns it on reaping it: its own peak resident set
    (kept across execve), or a reaped descendant's if larger. Not getrusage(RUSAGE_CHILDREN),
    whose maximum covers every child this process ever reaped."""


def measured(argv: Sequence[str], env: dict[str, str] | None = None, input: str | None = None,
             ok: Sequence[int] = (0,)) -> Measured:
    """Wall time and peak RSS of one command, reaped with os.wait4 (Popen's own wait would
    discard the rusage); its output goes to files, so a chatty child never blocks on a pipe
    while its stdin is written. Fails loudly, as `timed`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=None if input is None else subprocess.PIPE, stdout=out,
                                stderr=err)
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError), proc.stdin:  # one that exits unread: as subprocess.run
                proc.stdin.write((input or "").encode())
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if proc.returncode not in ok:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv[:4])}... exited {proc.returncode}: {err.read().decode()}")
    return Measured(elapsed, usage.ru_maxrss)


def reconcile(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconcile", *args]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, ready to paste into bench/README.md."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")
