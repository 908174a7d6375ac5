"""Shared plumbing for the benchmarks: a throwaway host and a timer around the real CLI."""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parent.parent


def reexec_in_throwaway_host() -> None:
    """Re-run this script inside fresh network + mount namespaces (tmpfs over /run/netns), so a
    benchmark never touches the machine's own network; everything dies with the process."""
    if os.environ.get("RECONCILE_BENCH_SANDBOXED") == "1":
        return
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


def time_cli_round(stack_text: str, before: Sequence[Sequence[str]] = ()) -> CliTimes:
    """apply, apply again, diff, down of one stack through the real CLI, with a fresh state dir
    and a per-run cgroup parent (removed afterwards: cgroupfs is not in the throwaway host).
    `before`: CLI commands run first, untimed (an image pull)."""
    path = Path(tempfile.mkdtemp()) / "stack.yaml"
    path.write_text(stack_text)
    parent = f"rc-bench-{uuid.uuid4().hex[:8]}"
    state_dir = tempfile.mkdtemp(prefix="rc-bench-")
    env = {**os.environ, "RECONCILE_STATE_DIR": state_dir,
           "RECONCILE_CGROUP_PARENT": parent, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    try:
        for args in before:
            timed(reconcile(*args), env)
        return CliTimes(cold_apply=timed(reconcile("apply", str(path)), env),
                        noop_apply=timed(reconcile("apply", str(path)), env),
                        noop_diff=timed(reconcile("diff", str(path)), env),
                        down=timed(reconcile("down", str(path)), env))
    finally:
        for directory in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
            directory.rmdir()  # empty after down; a failed run leaves it to be seen
        remove_state_dir(Path(state_dir))
        shutil.rmtree(path.parent, ignore_errors=True)


def remove_state_dir(state_dir: Path) -> None:
    """Delete a run's state dir. Its `containers` directory is a bind mount of itself (shared,
    for crun on hybrid hosts): unmounted first, or rmtree stops at it and the directory outlives
    the throwaway host on the machine's disk."""
    subprocess.run(["umount", "--recursive", "--lazy", str(state_dir / "containers")], capture_output=True)
    shutil.rmtree(state_dir, ignore_errors=True)


def timed(argv: Sequence[str], env: dict[str, str] | None = None, input: str | None = None,
          ok: Sequence[int] = (0,)) -> float:
    """Wall time of one command; fails loudly if it fails, so a broken run never prints numbers."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, input=input, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv[:4])}... exited {proc.returncode}: {proc.stderr}")
    return elapsed


def reconcile(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconcile", *args]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, ready to paste into bench/README.md."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")
