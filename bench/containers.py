"""Containers: cold apply, no-op apply, no-op diff and down for N = 10, 50, 200 containers on one
network, beside the floor: one `ip -batch` building the same namespaces and veths (and a
small one inside each namespace), plus spawning
the same processes (nsenter + unshare + tini + sleep) without any bookkeeping.

Run as root: `.venv/bin/python bench/containers.py` (it re-executes itself in a throwaway host).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, reexec_in_throwaway_host, time_cli_round  # noqa: E402

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "10,50,200").split(","))


def stack_text(n: int) -> str:
    containers = "".join(f"  c{i}:\n    command: sleep 100000\n    networks: [net]\n" for i in range(n))
    return f"name: bench\nnetworks:\n  net:\n    subnet: 10.60.0.0/24\ncontainers:\n{containers}"


def floor(n: int) -> tuple[float, float]:
    """The same kernel work with no reconciler: returns (up, down) seconds."""
    start = time.perf_counter()
    # Names unique per size: the kernel frees a deleted namespace's veths asynchronously.
    bridge = f"f{n}br"
    batch = [f"link add {bridge} type bridge", f"addr add 10.61.0.1/24 dev {bridge}", f"link set {bridge} up"]
    for i in range(n):
        batch += [f"netns add f{n}n{i}", f"link add f{n}v{i} type veth peer name eth0 netns f{n}n{i}",
                  f"link set f{n}v{i} master {bridge} up"]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", text=True, check=True)
    for i in range(n):  # `ip -batch` cannot switch namespaces: one small batch inside each
        subprocess.run(["ip", "-n", f"f{n}n{i}", "-batch", "-"], text=True, check=True,
                       input=f"addr add 10.61.0.{i + 2}/24 dev eth0\nlink set eth0 up\nlink set lo up\n")
    procs = [subprocess.Popen(["nsenter", f"--net=/run/netns/f{n}n{i}", "--", "unshare", "--pid", "--fork", "--kill-child",
                               "--mount", "--uts", "--ipc", "--", "/usr/bin/tini-static", "-s", "--",
                               "sleep", "100000"], start_new_session=True) for i in range(n)]
    up = time.perf_counter() - start
    start = time.perf_counter()
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    subprocess.run(["ip", "-batch", "-"], check=True, text=True,
                   input="".join(f"netns del f{n}n{i}\n" for i in range(n)) + f"link del {bridge}\n")
    return up, time.perf_counter() - start


def main() -> None:
    reexec_in_throwaway_host()
    rows = []
    for n in SIZES:
        times = time_cli_round(stack_text(n))
        floor_up, floor_down = floor(n)
        rows.append([n, times.cold_apply, times.noop_apply, times.noop_diff, times.down, floor_up, floor_down])
    print_table(["containers", "cold apply s", "no-op apply s", "no-op diff s", "down s",
                 "floor up s", "floor down s"], rows)


if __name__ == "__main__":
    main()
