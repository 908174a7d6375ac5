"""Published ports on both firewall backends: the controller's cold apply (observe + diff + one
batch), no-op diff (observe + diff), a one-port change and down, for 1, 100 and 1000 published
TCP ports, beside the floor: the backend's one batch (`nft -f` / `iptables-restore --noflush`)
of exactly the same rules, timed in the same run.

Run as root: `.venv/bin/python bench/ports.py` (it re-executes itself in a throwaway host).
`BENCH_SIZES=1000` for one size, `BENCH_BACKENDS=nftables` for one backend. Each figure is the
median of REPEAT runs, each from a host with none of our rules (the one-port change: from the
full set). The controller is built as the CLI builds it (`FirewallController.for_host`), so it
also reads the other backend's rules to migrate away from: that read is part of every pass.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, reexec_in_throwaway_host  # noqa: E402
from controllers.base import Desired  # noqa: E402
from controllers.firewall import FirewallController, Work, backends  # noqa: E402
from kernel.netfilter import Op  # noqa: E402
from specs.model import Stack  # noqa: E402

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "1,100,1000").split(","))
BACKENDS = tuple(os.environ.get("BENCH_BACKENDS", "nftables,iptables").split(","))
REPEAT = 5
BRIDGE = "rcb-bench"


def desired_with(ports: int, first_host_port: int = 10000) -> Desired:
    """One network, one container per published port (the shape of a real stack at scale);
    container c0 publishes `first_host_port`."""
    containers = {
        f"c{i}": {"command": ["/bin/true"], "ports": [f"{first_host_port if i == 0 else 10000 + i}:80"],
                  "networks": {"front": {"ip": f"10.77.{1 + i // 250}.{1 + i % 250}"}}}
        for i in range(ports)}
    stack = Stack.model_validate({
        "name": "bench", "containers": containers,
        "networks": {"front": {"subnet": "10.77.0.0/16", "bridge": BRIDGE}}})
    addresses = {("bench", key, "front"): ip for key, c in stack.containers.items()
                 if (ip := c.networks["front"].ip) is not None}  # every one is static
    return Desired(stacks={"bench": stack}, scope=frozenset({"bench"}), addresses=addresses)


def median_seconds(run: Callable[[], object], reset: Callable[[], object]) -> float:
    samples = []
    for _ in range(REPEAT):
        reset()
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class Bench:
    def __init__(self, choice: str):
        self.backend, others = backends(choice)
        self.controller = FirewallController(self.backend, others)
        self.nothing = Desired(stacks={}, scope=frozenset({"bench"}))

    def converge(self, want: Desired) -> None:
        """What `apply` does for this controller: observe, diff, one batch."""
        self.controller.apply(self.controller.diff(want, self.controller.observe()).changes)

    def ops_to(self, want: Desired) -> list[Op]:
        """The batch the controller would send from the host as it is now (observed just before:
        the nftables backend deletes by the handles that read returned)."""
        changes = self.controller.diff(want, self.controller.observe()).changes
        return [op for c in changes if isinstance(c.desired, Work) for op in c.desired.ops]

    def batch_seconds(self, start: Desired, want: Desired) -> float:
        """The floor: the backend's one batch from `start` to `want`, nothing else timed."""
        samples = []
        for _ in range(REPEAT):
            self.converge(start)
            ops = self.ops_to(want)
            began = time.perf_counter()
            self.backend.apply(ops)
            samples.append(time.perf_counter() - began)
        return statistics.median(samples)

    def row(self, ports: int) -> list[object]:
        want = desired_with(ports)
        moved = desired_with(ports, first_host_port=9999)
        self.converge(self.nothing)
        rules = sum(1 for op in self.ops_to(want) if op.spec)
        floor = self.batch_seconds(self.nothing, want)
        apply = median_seconds(lambda: self.converge(want), lambda: self.converge(self.nothing))
        noop = median_seconds(lambda: self.controller.diff(want, self.controller.observe()), lambda: None)
        change = median_seconds(lambda: self.converge(moved), lambda: self.converge(want))
        change_batch = self.batch_seconds(want, moved)
        down = median_seconds(lambda: self.converge(self.nothing), lambda: self.converge(want))
        return [self.backend.name, ports, rules, apply, noop, change, f"{change_batch * 1000:.1f}", down,
                floor, f"{apply / floor:.1f}x", f"{noop / floor:.1f}x"]


def main() -> None:
    reexec_in_throwaway_host()
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    rows = []
    for choice in BACKENDS:
        bench = Bench(choice)
        rows += [bench.row(n) for n in SIZES]
        bench.converge(bench.nothing)
    print_table(["backend", "ports", "rules", "apply s", "no-op diff s", "1-port change s",
                 "its batch ms", "down s", "floor s (one batch)", "apply/floor", "no-op diff/floor"], rows)


if __name__ == "__main__":
    main()
