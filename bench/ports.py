"""Published ports: the firewall controller's cold apply (observe + diff + one restore batch)
and no-op diff (observe + diff) for 1, 100 and 1000 published TCP ports, beside the floor: one
`iptables-restore --noflush` of exactly the same rules, timed in the same run.

Run as root: `.venv/bin/python bench/ports.py` (it re-executes itself in a throwaway host).
Each figure is the median of REPEAT runs, each from a host with none of our rules.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, reexec_in_throwaway_host  # noqa: E402
from controllers.base import Desired  # noqa: E402
from controllers.firewall import FirewallController, Work  # noqa: E402
from kernel import netfilter  # noqa: E402
from specs.model import Stack  # noqa: E402

SIZES = (1, 100, 1000)
REPEAT = 5
BRIDGE = "rcb-bench"


def desired_with(ports: int) -> Desired:
    """One network, one container per published port (the shape of a real stack at scale)."""
    containers = {
        f"c{i}": {"command": ["/bin/true"], "ports": [f"{10000 + i}:80"],
                  "networks": {"front": {"ip": f"10.77.{1 + i // 250}.{1 + i % 250}"}}}
        for i in range(ports)}
    stack = Stack.model_validate({
        "name": "bench", "containers": containers,
        "networks": {"front": {"subnet": "10.77.0.0/16", "bridge": BRIDGE}}})
    addresses = {("bench", key, "front"): c.networks["front"].ip for key, c in stack.containers.items()}
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
    def __init__(self, controller: FirewallController):
        self.controller = controller
        self.nothing = Desired(stacks={}, scope=frozenset({"bench"}))

    def converge(self, want: Desired) -> None:
        """What `apply` does for this controller: observe, diff, one batch."""
        self.controller.apply(self.controller.diff(want, self.controller.observe()).changes)

    def floor_script(self, want: Desired) -> str:
        """The restore script the controller's batch amounts to, from a host without our rules."""
        changes = self.controller.diff(want, self.controller.observe()).changes
        return netfilter.restore_script([op for c in changes if isinstance(c.desired, Work)
                                         for op in c.desired.ops])

    def row(self, ports: int) -> list[object]:
        want = desired_with(ports)
        script = self.floor_script(want)
        rules = sum(1 for line in script.splitlines() if line.startswith(("-A", "-I")))

        def restore() -> None:
            subprocess.run(["iptables-restore", "--noflush"], input=script, text=True, check=True)

        floor = median_seconds(restore, lambda: self.converge(self.nothing))
        apply = median_seconds(lambda: self.converge(want), lambda: self.converge(self.nothing))
        noop = median_seconds(lambda: self.controller.diff(want, self.controller.observe()), lambda: None)
        down = median_seconds(lambda: self.converge(self.nothing), lambda: self.converge(want))
        return [ports, rules, apply, noop, down, floor, f"{apply / floor:.1f}x", f"{noop / floor:.1f}x"]


def main() -> None:
    reexec_in_throwaway_host()
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    bench = Bench(FirewallController(netfilter.detect()))
    rows = [bench.row(n) for n in SIZES]
    print_table(["ports", "rules", "apply s", "no-op diff s", "down s",
                 "floor s (one iptables-restore)", "apply/floor", "no-op diff/floor"], rows)


if __name__ == "__main__":
    main()
