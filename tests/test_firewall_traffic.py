"""Published ports, masquerade and isolation with real packets, inside a sandbox.

Built by hand (as the network and sandbox controllers would): bridges rcbr0 (front, 10.88.1.0/24)
with containers c1 and c2, rcbr1 (back, internal) with c3, rcbr2 (side) with c4, hairpin on
every bridge port; a `client` namespace behind the veth `uplink` plays another machine
(10.99.0.2; the host is 10.99.0.1 and 10.99.0.4 there). FORWARD's policy is DROP, as Docker
sets it. Every wait is bounded, and traffic only goes to addresses of namespaces made here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.firewall_canaries import CANARY, DOCKER_NO_DROP
from tests.firewall_lab import FAILED, Lab
from tests.firewall_support import foreign_rules, our_nft, our_rules, run_controller
from tests.sandbox import Sandbox
from tests.waiting import eventually

TOPOLOGY = """
set -e
sysctl -qw net.ipv4.ip_forward=1
mkbridge() { ip link add $1 type bridge; ip addr add $2 dev $1; ip link set $1 up; }
container() {
  ip netns add $1
  ip link add h-$1 type veth peer name eth0 netns $1
  ip link set h-$1 master $2 up
  bridge link set dev h-$1 hairpin on
  ip -n $1 link set lo up
  ip -n $1 addr add $3/24 dev eth0
  ip -n $1 link set eth0 up
  ip -n $1 route add default via $4
}
mkbridge rcbr0 10.88.1.1/24
mkbridge rcbr1 10.88.2.1/24
mkbridge rcbr2 10.88.3.1/24
container c1 rcbr0 10.88.1.10 10.88.1.1
container c2 rcbr0 10.88.1.11 10.88.1.1
container c3 rcbr1 10.88.2.10 10.88.2.1
container c4 rcbr2 10.88.3.10 10.88.3.1
ip netns add client
ip link add uplink type veth peer name eth0 netns client
ip addr add 10.99.0.1/24 dev uplink
ip addr add 10.99.0.4/24 dev uplink
ip link set uplink up
ip -n client link set lo up
ip -n client addr add 10.99.0.2/24 dev eth0
ip -n client link set eth0 up
ip -n client route add default via 10.99.0.1
"""

STACK = {
    "networks": {"front": {"subnet": "10.88.1.0/24", "bridge": "rcbr0"},
                 "back": {"subnet": "10.88.2.0/24", "bridge": "rcbr1", "internal": True},
                 "side": {"subnet": "10.88.3.0/24", "bridge": "rcbr2"}},
    "containers": {
        "c1": {"networks": {"front": {"ip": "10.88.1.10"}},
               "ports": ["8080:80", "5353:53/udp", "10.99.0.1:9090:80", "127.0.0.1:8443:80"]},
        "c2": {"networks": {"front": {"ip": "10.88.1.11"}}, "ports": ["8081:80"]},
        "c3": {"networks": {"back": {"ip": "10.88.2.10"}}},
        "c4": {"networks": {"side": {"ip": "10.88.3.10"}}},
    },
}
APPLIED = {"stacks": {"demo": STACK}}


LOOPBACK_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 7002))
while True:
    with open(sys.argv[1], "ab") as log:
        log.write(s.recvfrom(2048)[0] + b"\\n")
"""
"""A host service bound to 127.0.0.1 only, logging every datagram it receives."""
INTRUDER = """
set -e
ip netns add intruder
ip link add h-intruder type veth peer name eth0 netns intruder
ip link set h-intruder master rcbr0 up
ip -n intruder link set lo up
ip -n intruder addr add 10.88.1.20/24 dev eth0
ip -n intruder link set eth0 up
ip netns exec intruder sysctl -qw net.ipv4.conf.all.route_localnet=1
ip -n intruder route del local 127.0.0.0/8 dev lo table local
ip -n intruder route del local 127.0.0.1 dev lo table local
ip -n intruder route add 127.0.0.0/8 via 10.88.1.1 dev eth0
"""
"""A container on rcbr0 that sends to 127.0.0.1 through its gateway, to get at the host's
loopback services once route_localnet is on for the bridge (CVE-2020-8558)."""

FOREIGN_FORWARD = """\
table inet rc-h17-admin {
	chain forward {
		type filter hook forward priority filter - 5; policy accept;
		tcp dport 6666 drop
	}
}
"""


@pytest.fixture(params=["iptables", "nftables"])
def lab(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """On nftables the Docker-like canary keeps FORWARD's policy ACCEPT (a foreign DROP policy
    drops what our own table accepts: `auto` stays on iptables then, see docs/spec.md) and an
    admin's inet table with a forward base chain joins it."""
    sandbox.sh(TOPOLOGY)
    lab = Lab(sandbox, request.param)
    try:
        lab.start_servers()
        assert eventually(lambda: lab.http("c2", "10.88.1.10", 80), "c1") == "c1"
        assert eventually(lambda: lab.http("c1", "10.88.1.11", 80), "c2") == "c2"
        if lab.backend == "iptables":
            sandbox.run("iptables-restore", "--noflush", input=CANARY)  # FORWARD policy DROP from here
        else:
            sandbox.run("iptables-restore", "--noflush", input=DOCKER_NO_DROP)
            sandbox.run("nft", "-f", "-", input=FOREIGN_FORWARD)
        yield lab
    finally:
        lab.stop()


def test_published_ports_answer_from_everywhere(lab: Lab) -> None:
    canary = foreign_rules(lab.sandbox)
    # A UDP client that talked to the port before it was published holds an un-NATed
    # conntrack entry: the apply must flush it for the mapping to take effect at once.
    assert lab.udp("client", "10.99.0.1", 5353, source_port=40000) == FAILED
    assert run_controller(lab.sandbox, "apply", APPLIED, lab.backend)["issues"] == []

    assert eventually(lambda: lab.http("client", "10.99.0.1", 8080), "c1") == "c1"  # another machine
    assert lab.http(None, "127.0.0.1", 8080) == "c1"  # the host, on loopback
    assert lab.http(None, "10.99.0.1", 8080) == "c1"  # the host, on its own address
    assert lab.http("c1", "10.99.0.1", 8080) == "c1"  # hairpin to its own port
    assert lab.http("c2", "10.99.0.1", 8080) == "c1"  # hairpin to a neighbour's port
    assert lab.http("c1", "10.99.0.1", 8081) == "c2"
    assert lab.http("c4", "10.99.0.1", 8080) == "c1"  # from another network, through the host
    assert lab.udp("client", "10.99.0.1", 5353, source_port=40000) == "c1:ping"
    assert lab.udp(None, "127.0.0.1", 5353) == "c1:ping"
    assert lab.udp("c2", "10.99.0.1", 5353) == "c1:ping"

    # host_ip narrows: 9090 only on 10.99.0.1, 8443 only on the host's loopback.
    assert lab.http("client", "10.99.0.1", 9090) == "c1"
    assert lab.http("client", "10.99.0.4", 9090) == FAILED
    assert lab.http(None, "127.0.0.1", 8443) == "c1"
    assert lab.http(None, "10.99.0.1", 8443) == FAILED
    assert lab.http("client", "10.99.0.1", 8443) == FAILED
    assert foreign_rules(lab.sandbox) == canary


def test_masquerade_isolation_and_internal_networks(lab: Lab) -> None:
    run_controller(lab.sandbox, "apply", APPLIED, lab.backend)
    assert eventually(lambda: lab.whoami("c1"), "10.99.0.1") == "10.99.0.1"  # masqueraded out
    assert lab.whoami("c4") == "10.99.0.1"
    assert lab.http("c2", "10.88.1.10", 80) == "c1"  # a shared network, bridged, under DROP
    assert lab.http("c4", "10.88.1.10", 80) == FAILED  # no shared network: isolated
    assert lab.whoami("c3") == FAILED  # internal: no way out...
    assert lab.http("c3", "10.99.0.1", 8080) == FAILED  # ...not even to a published port
    assert lab.http("c3", "10.88.1.10", 80) == FAILED


def test_a_changed_mapping_takes_effect_at_once_and_removal_leaves_nothing(lab: Lab) -> None:
    canary = foreign_rules(lab.sandbox)
    run_controller(lab.sandbox, "apply", APPLIED, lab.backend)
    assert eventually(lambda: lab.udp("client", "10.99.0.1", 5353, source_port=40001), "c1:ping") == "c1:ping"

    c1, c2 = STACK["containers"]["c1"], STACK["containers"]["c2"]
    moved = {**STACK, "containers": {**STACK["containers"], "c1": {**c1, "ports": ["8080:80"]},
                                     "c2": {**c2, "ports": ["8081:80", "5353:53/udp"]}}}
    run_controller(lab.sandbox, "apply", {"stacks": {"demo": moved}}, lab.backend)
    assert lab.udp("client", "10.99.0.1", 5353, source_port=40001) == "c2:ping"  # same flow, new target

    removed = run_controller(lab.sandbox, "apply", {"stacks": {}, "scope": ["demo"]}, lab.backend)
    assert removed["changes"] and our_rules(lab.sandbox) == [] and our_nft(lab.sandbox) is None
    assert lab.http("client", "10.99.0.1", 8080) == FAILED
    assert foreign_rules(lab.sandbox) == canary


def test_route_localnet_does_not_open_the_hosts_loopback_to_containers(lab: Lab) -> None:
    lab.sandbox.sh(INTRUDER)
    log = lab.sandbox.workdir / "sink.log"
    log.touch()
    lab.spawn(None, sys.executable, "-c", LOOPBACK_SINK, str(log))
    run_controller(lab.sandbox, "apply", APPLIED, lab.backend)
    assert eventually(lambda: lab.udp(None, "127.0.0.1", 7002) and log.read_text(), "ping\n") == "ping\n"

    lab.probe("intruder", "udp", "127.0.0.1", 7002, "sneaked")
    if lab.backend == "nftables":
        assert log.read_text() == "ping\n"
        return
    guard = next(line for line in lab.sandbox.run("iptables-save", "-c", "-t", "filter").stdout.splitlines()
                 if "-A RECONCILE-INPUT -d 127.0.0.0/8 -i rcbr0 " in line)
    assert not guard.startswith("[0:"), guard  # the datagram did arrive, and was dropped here
    assert log.read_text() == "ping\n"
