"""Scale (issue 15, "A thousand containers"): one stack of N confined containers (`sleep 100000`,
one /22 network, a published port and memory and pids limits each: bench/containers.py's
stack) through the real CLI and under the watch agent, beside the same-run floor.

Columns, per N:
- cold apply, no-op apply, no-op diff, status -o json, down: wall seconds of the real CLI
  (`python -m reconcile ...`, start-up included) with a fresh state dir and cgroup parent, in
  that order in one round (bench/common.py's `time_cli_round`); the median of BENCH_ROUNDS
  rounds (default 3). `status -o json PATH` runs with everything in place.
- CLI peak RSS (no-op diff): the no-op diff's ru_maxrss as os.wait4 returns it when the bench
  reaps that very child (its own peak, kept across exec; larger only if a descendant it reaped
  peaked higher), in MiB; the median of the rounds. Not getrusage(RUSAGE_CHILDREN): that
  maximum covers every child ever reaped, so an earlier, larger apply would hide it.
- watch: drift repair p50: `reconcile watch DIR` is started on the same stack from an empty
  host; once it has converged and gone quiet, each drift kind is made BENCH_TRIALS times
  (default 5) on container c{N/2} and timed from just before the command that makes it to the
  agent's log line of the repair, which is then checked against the kernel (bench/drift.py's
  trials): its veth deleted, its DNAT rule deleted (with the agent's backend's tool, nftables
  unless BENCH_FIREWALL_BACKEND says otherwise), its process SIGKILLed. Milliseconds.
- watch agent RSS converged / peak: the agent's VmRSS and VmHWM (MiB) read once, converged and
  quiet, before the drift trials; the peak includes the cold convergence. "converged in" is
  the seconds from the agent's start until it has started all N and gone quiet for 2 s.
- killed, image stack: the same stack with every container from one image (busybox-static
  running `sleep 100000`, from a registry on loopback; bench/images.py's), converged by an
  agent from an empty host, then c{N/2}'s process SIGKILLed BENCH_TRIALS times: the repair's
  p50 (ms). The stack above runs no image, so it never takes an image's path (pinning,
  merging), which a focused pass once took for every container of the stack.
- floor up / floor down: bench/containers.py's `floor`: the same kernel and runtime work with
  no reconciler (ip -batch, overlay roots, `crun run` of a prebuilt config), same run.
- floor repair p50: in that floor, once all are up and settled, c{N/2}'s veth deleted
  BENCH_TRIALS times and made again with the sandbox controller's requests once the kernel
  announces the deletion (timed from just before `ip link del` to the last answer); then its
  process SIGKILLed and started again (its root unmounted and mounted again, `crun run`; from
  just before the kill to the new pid file). Milliseconds: what the kernel and the runtime alone
  take for the agent's veth and killed-container repairs beside N, the part of their growth
  with N that the agent's requests and crun's restart cannot avoid on this kernel.

The CLI round, the floor and the agent each start once the kernel has freed the cgroups the
phase before removed (bench/common.py's `settle_cgroups`: after a `down` of 1,000 containers
the kernel frees their memory cgroups in its workers for minutes, and what runs meanwhile
competes with them).

Run as root: `.venv/bin/python bench/scale.py` (it re-executes itself in a throwaway host).
BENCH_SIZES (default 200,1000), BENCH_ROUNDS and BENCH_TRIALS shrink a run; everything it
creates (state dirs, cgroup parents rc-bench-*, containers, namespaces) is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CliTimes,
    print_table,
    reexec_in_throwaway_host,
    settle_cgroups,
    time_cli_round,
)
from bench.containers import Floor, floor, stack_text  # noqa: E402
from bench.drift import (  # noqa: E402
    DriftKind,
    container_killed,
    converge,
    dnat_rule_deleted,
    repair_times,
    veth_deleted,
    watching,
)
from bench.images import loopback_registry, small_image  # noqa: E402
from bench.images import stack_text as image_stack_text  # noqa: E402

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "200,1000").split(",") if n)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TRIALS = int(os.environ.get("BENCH_TRIALS", "5"))
STACK = "bench"
"""The stack's name in bench/containers.py's `stack_text`; its network is `net`, c{i} publishes
host port 20000 + i."""
FIRST_PORT = 20000


@dataclass(frozen=True)
class CliMedians:
    cold_apply: float
    noop_apply: float
    noop_diff: float
    status_json: float
    down: float
    diff_peak_rss_mib: float


@dataclass(frozen=True)
class WatchFigures:
    repair_p50_ms: tuple[float, ...]
    """Per drift kind, in the order of `drift_kinds`."""
    rss_mib: float
    peak_mib: float
    converged_s: float


def cli_medians(n: int) -> CliMedians:
    """Medians over ROUNDS rounds of the CLI on the N-container stack."""
    rounds = [time_cli_round(stack_text(n), status=True) for _ in range(ROUNDS)]

    def median(field: Callable[[CliTimes], float | int | None]) -> float:
        values = [field(r) for r in rounds]
        return statistics.median(v for v in values if v is not None)

    return CliMedians(cold_apply=median(lambda r: r.cold_apply), noop_apply=median(lambda r: r.noop_apply),
                      noop_diff=median(lambda r: r.noop_diff), status_json=median(lambda r: r.status_json),
                      down=median(lambda r: r.down),
                      diff_peak_rss_mib=median(lambda r: r.noop_diff_peak_rss_kib) / 1024)


def floor_figures(n: int) -> Floor:
    """The same-run floor for N containers, with TRIALS repairs of each kind it can make."""
    work = Path(tempfile.mkdtemp(prefix="rc-bench-floor-"))
    try:
        return floor(n, work, repair_trials=TRIALS)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def drift_kinds(env: dict[str, str], n: int) -> dict[str, DriftKind]:
    """The three timed drifts, all on the container in the middle of the stack."""
    index = n // 2
    return {
        "veth deleted": veth_deleted(f"{STACK}/c{index}/net"),
        "rule deleted": dnat_rule_deleted(FIRST_PORT + index),
        "container killed": container_killed(env, f"c{index}"),
    }


def watch_figures(n: int) -> WatchFigures:
    """The agent converges the stack from an empty host; its memory is read once it is quiet,
    then each drift kind is repaired TRIALS times."""
    with watching(STACK, stack_text(n)) as (agent, env):
        converged = converge(agent, env, STACK, n)
        rss_kib, peak_kib = agent.memory_kib()
        p50 = tuple(statistics.median(repair_times(agent, kind, drift, TRIALS)) * 1000
                    for kind, drift in drift_kinds(env, n).items())
    return WatchFigures(p50, rss_kib / 1024, peak_kib / 1024, converged)


def image_killed_p50_ms(n: int, image: str) -> float:
    """A killed container's repair p50 with every container of the stack from `image`."""
    with watching(STACK, image_stack_text(n, image)) as (agent, env):
        converge(agent, env, STACK, n)
        return statistics.median(repair_times(agent, "container killed", container_killed(env, f"c{n // 2}"),
                                              TRIALS)) * 1000


def row(n: int, image: str) -> Sequence[object]:
    """Each phase starts once the kernel has freed the cgroups the one before removed."""
    settle_cgroups()
    cli = cli_medians(n)
    settle_cgroups()
    floor_run = floor_figures(n)
    settle_cgroups()
    watch = watch_figures(n)
    settle_cgroups()
    image_killed = image_killed_p50_ms(n, image)
    return [n, cli.cold_apply, cli.noop_apply, cli.noop_diff, cli.status_json, cli.down,
            f"{cli.diff_peak_rss_mib:.1f}", " / ".join(f"{ms:.1f}" for ms in watch.repair_p50_ms),
            f"{watch.rss_mib:.1f} / {watch.peak_mib:.1f}", f"{watch.converged_s:.1f}", f"{image_killed:.1f}",
            floor_run.up, floor_run.down, " / ".join(f"{statistics.median(samples) * 1000:.1f}"
                                                     for samples in (floor_run.veth_repairs, floor_run.restarts))]


def main() -> None:
    reexec_in_throwaway_host()
    with loopback_registry("rc-bench-scale-") as work:
        image = small_image(work)
        rows = [row(n, image) for n in SIZES]
    print_table(["N", "cold apply s", "no-op apply s", "no-op diff s", "status -o json s", "down s",
                 "CLI peak RSS MiB (no-op diff)",
                 "watch: drift repair p50 ms (veth deleted / rule deleted / container killed)",
                 "watch agent RSS MiB converged / peak", "agent converged in s", "killed, image stack p50 ms",
                 "floor up s", "floor down s", "floor repair p50 ms (veth deleted / container killed)"],
                rows)


if __name__ == "__main__":
    main()
