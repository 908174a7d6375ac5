"""Convergence from any state: for random valid stacks A and B (one stack name, overlapping
network and container keys), `apply A; apply B` leaves the host exactly as `apply B` on a clean
host does, and `diff` is empty after every apply.

"Exactly" is the product's own observation (every controller's observe(), rendered by
tests/cli_worker.py without ifindexes, pids and clocks). Dynamic container addresses are sticky,
so after A they may legitimately differ from a clean run: each must lie in its subnet, off the
gateway, unique on its network, and is then replaced by a placeholder; static ones compare as
they are. ip_forward is never switched off (by design), so it is only required on where B needs it.
An owner's rules compare as a multiset, as the firewall diff does (only RECONCILE-FORWARD's
order matters, and it is kept).

Speed: two long-lived sandboxes (the dirty host and the clean host) each with a CLI worker that
imports the product once, run side by side; every example ends with `down` on both and a check
that nothing of ours is left, which doubles as a leak check over hundreds of applies. Most
examples are networks only; about a third carry one or two cheap containers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.canary import planted
from tests.cli_worker import Worker
from tests.leaks import leftovers
from tests.reliability import record
from tests.sandbox import Sandbox

pytestmark = [pytest.mark.kernel,  # its Sandboxes are built in a module-scoped fixture
              pytest.mark.slow]

STACK = "rel"
NET_KEYS = ("a", "b", "c", "d")
CONTAINER_KEYS = ("x", "y", "z")
SUBNETS = tuple(f"10.93.{i}.0/24" for i in range(1, 7))
MTUS = (1500, 1400, 1280)
HOST_PORTS = tuple(range(18100, 18106))
STATIC_OFFSETS = tuple(range(2, 7))
"""Low host numbers, where IPAM allocates too: sticky leases from A run into B's static IPs."""
COMMANDS = ("sleep 100001", "sleep 100002")
EXAMPLES = 100

_ADDRESS = re.compile(r"(?<![\d.])(\d+\.\d+\.\d+\.\d+)(?![\d])")


@st.composite
def container_specs(draw: st.DrawFn, networks: dict[str, dict[str, Any]], earlier: list[str],
                    ports: Iterator[int], taken: dict[str, set[int]]) -> dict[str, Any]:
    """One valid container on 1-2 of `networks`: static or dynamic addresses, maybe a published
    port (only with a non-internal network to route it), limits, depends_on on `earlier` ones."""
    attached = draw(st.lists(st.sampled_from(sorted(networks)), min_size=1, max_size=2, unique=True))
    addressing: dict[str, dict[str, str]] = {}
    for net in attached:
        free = [o for o in STATIC_OFFSETS if o not in taken.setdefault(net, set())]
        if free and draw(st.booleans()):
            offset = draw(st.sampled_from(free))
            taken[net].add(offset)
            addressing[net] = {"ip": str(IPv4Network(networks[net]["subnet"])[offset])}
        else:
            addressing[net] = {}
    spec: dict[str, Any] = {"command": draw(st.sampled_from(COMMANDS)), "networks": addressing,
                            "stop_grace": 2}
    if any(not networks[n]["internal"] for n in attached) and draw(st.booleans()):
        spec["ports"] = [f"{next(ports)}:80"]
    resources = draw(st.fixed_dictionaries({}, optional={
        "memory": st.sampled_from(["32Mi", "64Mi"]), "pids": st.sampled_from([16, 32]),
        "cpus": st.sampled_from([0.25, 0.5]), "cpuset": st.just("0")}))
    if resources:
        spec["resources"] = resources
    if earlier:
        depends = draw(st.lists(st.sampled_from(earlier), max_size=len(earlier), unique=True))
        if depends:
            spec["depends_on"] = depends
    return spec


@st.composite
def stack_specs(draw: st.DrawFn, with_containers: bool) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(NET_KEYS), min_size=1, max_size=3, unique=True))
    subnets = draw(st.permutations(SUBNETS))
    networks = {key: {"subnet": subnet, "internal": draw(st.booleans()), "mtu": draw(st.sampled_from(MTUS))}
                for key, subnet in zip(keys, subnets)}
    spec: dict[str, Any] = {"name": STACK, "networks": networks}
    if with_containers:
        names = draw(st.lists(st.sampled_from(CONTAINER_KEYS), min_size=1, max_size=2, unique=True))
        ports = iter(draw(st.permutations(HOST_PORTS)))
        taken: dict[str, set[int]] = {}
        spec["containers"] = {name: draw(container_specs(networks, names[:i], ports, taken))
                              for i, name in enumerate(names)}
    return spec


@st.composite
def stack_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A and B; a third of the pairs carry containers (in A, B or both)."""
    containers = draw(st.sampled_from(["none", "none", "none", "none", "a", "b", "both"]))
    return (draw(stack_specs(containers in ("a", "both"))), draw(stack_specs(containers in ("b", "both"))))


def normalised(state: dict[str, Any], spec: dict[str, Any]) -> str:
    """The observation with dynamic addresses checked and replaced by `<container/network>`,
    and ip_forward checked against what the spec needs."""
    networks = spec["networks"]
    observed = state["NetworkObservation"]
    if any(not n["internal"] for n in networks.values()):
        assert observed["ip_forward"], "ip_forward is off with a non-internal network"
    observed["ip_forward"] = None
    owned = state["FirewallObservation"]["owned"]
    for owner, rules in owned.items():  # a multiset, as the product diffs it: a re-added rule
        owned[owner] = sorted(rules, key=json.dumps)  # goes last (RECONCILE-FORWARD is kept in order)
    sandboxes = state["SandboxObservation"]["sandboxes"]
    placeholders: dict[str, str] = {}
    for name, container in spec.get("containers", {}).items():
        for net, addressing in container["networks"].items():
            endpoint = sandboxes[f"{STACK}/{name}"]["endpoints"][net]["state"]
            address = IPv4Interface(endpoint["addresses"][0])
            subnet = IPv4Network(networks[net]["subnet"])
            if "ip" in addressing:
                assert address.ip == IPv4Address(addressing["ip"]), (name, net, address)
                continue
            assert address.network == subnet and address.ip != subnet[1], (name, net, address)
            assert str(address.ip) not in placeholders, f"{address.ip} given twice"
            placeholders[str(address.ip)] = f"<{name}/{net}>"
    text = json.dumps(state, indent=1, sort_keys=True)
    return _ADDRESS.sub(lambda m: placeholders.get(m[1], m[1]), text)


class Host:
    """A sandbox and its CLI worker; replaced whole when an example leaves it dirty, so one
    failure does not fail every example after it (and hypothesis can shrink)."""

    def __init__(self, workdir: Path):
        self._workdir = workdir
        self._generation = 0
        self.box, self.worker = self._start()

    def _start(self) -> tuple[Sandbox, Worker]:
        self._generation += 1
        box = Sandbox(self._workdir / f"host-{self._generation}")
        return box, Worker(box)

    def run(self, *argv: str) -> str:
        code, output = self.worker.reconcile(*argv)
        assert code == 0 and "Traceback" not in output, f"reconcile {' '.join(argv)} exited {code}:\n{output}"
        return output

    def apply_in_sync(self, path: Path) -> None:
        """apply, then diff must find nothing left to do. B's file takes the stack over from
        A's, which still declares it."""
        self.run("apply", "--take-over", str(path))
        self.run("diff", str(path))

    def clean_up(self) -> list[str]:
        """`down`, then whatever of ours is left (the worker process itself excepted)."""
        code, output = self.worker.reconcile("down", "--stack", STACK)
        left = [item for item in leftovers(self.box) if item != f"process {self.worker.pid}"]
        if code != 0:
            left.append(f"down exited {code}: {output}")
        if left:
            self.close()
            self.box, self.worker = self._start()
        return left

    def close(self) -> None:
        self.worker.close()
        self.box.close()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Host]]:
    workdir = tmp_path_factory.mktemp("convergence")
    dirty, clean = Host(workdir / "dirty"), Host(workdir / "clean")
    try:
        yield dirty, clean
    finally:
        dirty.close()
        clean.close()


tally = {"examples": 0, "with_containers": 0, "applies": 0, "leaks": 0}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pair=stack_pairs())
def test_apply_b_after_a_equals_apply_b_on_a_clean_host(hosts: tuple[Host, Host],
                                                        pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    dirty, clean = hosts
    spec_a, spec_b = pair
    files = {}
    for label, spec in (("a", spec_a), ("b", spec_b)):
        files[label] = dirty.box.workdir.parent / f"stack-{label}.yaml"
        files[label].write_text(json.dumps(spec, indent=1) + "\n")  # JSON is YAML

    def from_a_then_b() -> dict[str, Any]:
        dirty.apply_in_sync(files["a"])
        dirty.apply_in_sync(files["b"])
        return dirty.worker.observe()

    def b_on_a_clean_host() -> dict[str, Any]:
        clean.apply_in_sync(files["b"])
        return clean.worker.observe()

    tally["examples"] += 1
    tally["with_containers"] += bool(spec_a.get("containers") or spec_b.get("containers"))
    tally["applies"] += 3
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            after_a, fresh = pool.submit(from_a_then_b), pool.submit(b_on_a_clean_host)
            assert normalised(after_a.result(), spec_b) == normalised(fresh.result(), spec_b)
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:
            left = [item for found in pool.map(Host.clean_up, (dirty, clean)) for item in found]
        tally["leaks"] += len(left)
        record("convergence", **tally)
    assert not left, "left behind after down: " + ", ".join(left)


def test_a_to_b_leaves_the_foreign_canary_alone(hosts: tuple[Host, Host]) -> None:
    """One A -> B round with containers, ports and limits on the dirty host, with the foreign
    canary planted: byte-identical afterwards (the property's hosts carry no canary, to stay fast)."""
    dirty = hosts[0]
    spec_a = {"name": STACK, "networks": {"a": {"subnet": SUBNETS[0]}, "b": {"subnet": SUBNETS[1], "internal": True}},
              "containers": {"x": {"command": COMMANDS[0], "networks": ["a", "b"], "ports": ["18100:80"],
                                   "resources": {"memory": "32Mi", "pids": 16}, "stop_grace": 2}}}
    spec_b = {"name": STACK, "networks": {"b": {"subnet": SUBNETS[0]}},
              "containers": {"x": {"command": COMMANDS[1], "networks": ["b"], "stop_grace": 2}}}
    with planted(dirty.box) as canary:
        before = canary.snapshot()
        for label, spec in (("a", spec_a), ("b", spec_b)):
            path = dirty.box.workdir.parent / f"canary-{label}.yaml"
            path.write_text(json.dumps(spec))
            dirty.apply_in_sync(path)
        assert not dirty.clean_up()
        assert canary.snapshot() == before
