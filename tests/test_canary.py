"""The foreign canary (tests/canary.py) is only a proof if it notices: each kind of tampering
another tool's objects could suffer changes the snapshot, and an untouched one reads the same
twice and leaves nothing behind."""

from __future__ import annotations

import pytest

from tests.canary import planted
from tests.cgroupfs import directory, hierarchy_roots, limit_file
from tests.sandbox import Sandbox

TAMPERING = {
    "docker rule": "iptables -t nat -A DOCKER -p tcp --dport 1 -j RETURN",
    "admin rule": "iptables -D INPUT 1",
    "forward policy": "iptables -P FORWARD ACCEPT",
    "nft rule": "nft add rule inet rc-canary forward tcp dport 24 drop",
    "nft set element": "nft delete element inet rc-canary admins {{ 10.250.0.8 }}",
    "nft table": "nft delete table inet rc-canary",
    "bridge address": "ip addr add 10.250.9.1/24 dev br-canary",
    "veth detached": "ip link set cv0 nomaster",
    "netns link": "ip -n canary-ns link set cns0 up",
    "netns gone": "ip netns del canary-ns",
    "cgroup limit": "echo 18 > {pids_max}",
    "cgroup child": "mkdir {memory_cgroup}/child",
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_snapshot_notices_tampering(sandbox: Sandbox, tamper: str) -> None:
    with planted(sandbox) as canary:
        before = canary.snapshot()
        assert canary.snapshot() == before
        canary_cgroup = f"{sandbox.cgroup_parent}-canary"  # where the driver puts it, v1 or v2
        sandbox.sh(tamper.format(pids_max=limit_file(canary_cgroup, "pids"),
                                 memory_cgroup=directory(canary_cgroup, "memory")))
        assert canary.snapshot() != before


def test_remove_leaves_nothing(sandbox: Sandbox) -> None:
    with planted(sandbox):
        pass
    assert sandbox.netns_names() == []
    assert [link["ifname"] for link in sandbox.links()] == ["lo"]
    assert not [root for root in hierarchy_roots() if (root / f"{sandbox.cgroup_parent}-canary").exists()]
