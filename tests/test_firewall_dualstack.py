"""The firewall's IPv6 side against the real kernel, on both backends, inside a sandbox: v6 rules
read back as rendered (ip6tables-save, nft), a dual-stack stack applied twice changes nothing,
ipv6_nat toggles the masquerade alone, teardown and backend migration leave nothing of ours in
ip6tables or nft, foreign ip6tables rules and a foreign inet table stay byte-identical; then real
IPv6 packets: published ports from another machine, from the host on its own global address,
hairpin from containers, routed (no ipv6_nat) and masqueraded (ipv6_nat) traffic out,
isolation, internal networks, and a remapped UDP port taking effect at once.

Built by hand as test_firewall_traffic.py does (the network and sandbox controllers' part):
rcbr0 (front: 10.88.1.0/24 + fd00:88:1::/64, routed) with c1 and c2, rcbr1 (back, internal)
with c3, rcbr2 (side, ipv6_nat) with c4; a `client` namespace behind `uplink` plays another
machine (2001:db8:99::2; the host is 2001:db8:99::1 there). FORWARD's policy is DROP in both
families on the iptables backend, as Docker sets it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from controllers.firewall_rules import network_rules, port_key, port_rules
from kernel.netfilter import Family
from kernel.netfilter_nft import render_nft
from tests.firewall_canaries import CANARY, CANARY6, DOCKER_NO_DROP, FOREIGN_INET, ip6tables_foreign, ip6tables_ours
from tests.firewall_lab import FAILED, Lab
from tests.firewall_plans import converge, desired
from tests.firewall_support import FakeBackend, foreign_nft, foreign_rules, heads, our_nft, run_controller
from tests.sandbox import Sandbox
from tests.waiting import eventually

TOPOLOGY = """
set -e
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv6.conf.all.forwarding=1
mkbridge() { ip link add $1 type bridge; ip addr add $2 dev $1; ip addr add $3 dev $1 nodad; ip link set $1 up; }
container() {
  ip netns add $1
  ip link add h-$1 type veth peer name eth0 netns $1
  sysctl -qw net.ipv6.conf.h-$1.disable_ipv6=1  # as the sandbox controller's host ends
  ip link set h-$1 master $2 up
  bridge link set dev h-$1 hairpin on
  ip -n $1 link set lo up
  ip -n $1 addr add $3/24 dev eth0
  ip -n $1 addr add $4/64 dev eth0 nodad
  ip -n $1 link set eth0 up
  ip -n $1 route add default via $5
  ip -n $1 -6 route add default via $6
}
mkbridge rcbr0 10.88.1.1/24 fd00:88:1::1/64
mkbridge rcbr1 10.88.2.1/24 fd00:88:2::1/64
mkbridge rcbr2 10.88.3.1/24 fd00:88:3::1/64
container c1 rcbr0 10.88.1.10 fd00:88:1::10 10.88.1.1 fd00:88:1::1
container c2 rcbr0 10.88.1.11 fd00:88:1::11 10.88.1.1 fd00:88:1::1
container c3 rcbr1 10.88.2.10 fd00:88:2::10 10.88.2.1 fd00:88:2::1
container c4 rcbr2 10.88.3.10 fd00:88:3::10 10.88.3.1 fd00:88:3::1
ip netns add client
ip link add uplink type veth peer name eth0 netns client
ip addr add 10.99.0.1/24 dev uplink
ip addr add 2001:db8:99::1/64 dev uplink nodad
ip link set uplink up
ip -n client link set lo up
ip -n client addr add 10.99.0.2/24 dev eth0
ip -n client addr add 2001:db8:99::2/64 dev eth0 nodad
ip -n client link set eth0 up
ip -n client route add default via 10.99.0.1
ip -n client -6 route add default via 2001:db8:99::1
"""
HOST6 = "2001:db8:99::1"
CLIENT6 = "2001:db8:99::2"

STACK = {
    "networks": {"front": {"subnet": "10.88.1.0/24", "bridge": "rcbr0", "subnet6": "fd00:88:1::/64"},
                 "back": {"subnet": "10.88.2.0/24", "bridge": "rcbr1", "subnet6": "fd00:88:2::/64",
                          "internal": True},
                 "side": {"subnet": "10.88.3.0/24", "bridge": "rcbr2", "subnet6": "fd00:88:3::/64",
                          "ipv6_nat": True}},
    "containers": {
        "c1": {"networks": {"front": {"ip": "10.88.1.10", "ip6": "fd00:88:1::10"}},
               "ports": ["8080:80", "5353:53/udp", "10.99.0.1:9090:80"]},
        "c2": {"networks": {"front": {"ip": "10.88.1.11", "ip6": "fd00:88:1::11"}}, "ports": ["8081:80"]},
        "c3": {"networks": {"back": {"ip": "10.88.2.10", "ip6": "fd00:88:2::10"}}},
        "c4": {"networks": {"side": {"ip": "10.88.3.10", "ip6": "fd00:88:3::10"}}},
    },
}
APPLIED = {"stacks": {"demo": STACK}}

CANARY6_NO_DROP = CANARY6.replace(":FORWARD DROP [0:0]\n", "")

SERVE = """
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET6, kind)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[4] if len(sys.argv) > 4 else "::", int(sys.argv[2])))
if kind == socket.SOCK_DGRAM:
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(sys.argv[3].encode() + b":" + data, peer)
s.listen()
while True:
    conn, peer = s.accept()
    conn.sendall((sys.argv[3] or peer[0]).encode())
    conn.close()
"""
"""A dual-stack server: TCP answers its name (or, given "", the client's address) and closes;
UDP echoes with its name. A fourth argument: the one address to bind."""
PROBE6 = """
import socket, sys
protocol, address, port, source_port = sys.argv[1:5]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
s.settimeout(1.5)
try:
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(source_port)))
    if protocol == "udp":
        s.sendto(b"ping", (address, int(port)))
        print(s.recvfrom(2048)[0].decode())
    else:
        s.connect((address, int(port)))
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        print(answer.decode())
except OSError:
    print("failed")
"""


class Lab6(Lab):
    def start_servers(self) -> None:
        for name in ("c1", "c2"):
            self.spawn(name, sys.executable, "-c", SERVE, "tcp", "80", name)
            self.spawn(name, sys.executable, "-c", SERVE, "udp", "53", name)
        self.spawn("client", sys.executable, "-c", SERVE, "tcp", "7000", "")

    def ask(self, netns: str | None, protocol: str, address: str, port: int, source_port: int = 0) -> str:
        """The answer from address:port, sent from `netns` (None: the host), or FAILED."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        argv = [sys.executable, "-c", PROBE6, protocol, address, str(port), str(source_port)]
        return self.sandbox.run("timeout", "5", *prefix, *argv, check=False).stdout.strip() or FAILED


def _foreign(sandbox: Sandbox) -> tuple[str, str, dict[str, str]]:
    """Everything not ours: iptables' and ip6tables' rules, and the inet tables (the admin's)."""
    inet = {name: text for name, text in foreign_nft(sandbox).items() if name.startswith("inet ")}
    return foreign_rules(sandbox), ip6tables_foreign(sandbox), inet


@pytest.fixture(params=["iptables", "nftables"])
def lab(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[Lab6]:
    sandbox.sh(TOPOLOGY)
    lab = Lab6(sandbox, request.param)
    try:
        lab.start_servers()
        assert eventually(lambda: lab.ask("c2", "tcp", "fd00:88:1::10", 80), "c1") == "c1"
        if lab.backend == "iptables":
            sandbox.run("iptables-restore", "--noflush", input=CANARY)  # FORWARD policy DROP from here
            sandbox.run("ip6tables-restore", "--noflush", input=CANARY6)
        else:
            sandbox.run("iptables-restore", "--noflush", input=DOCKER_NO_DROP)
            sandbox.run("ip6tables-restore", "--noflush", input=CANARY6_NO_DROP)
        sandbox.run("nft", "-f", "-", input=FOREIGN_INET)
        yield lab
    finally:
        lab.stop()


def _v6_lines_as_rendered(backend: str) -> list[str]:
    """Our IPv6 rules as the backend must print them: iptables' from the controller run on the
    fake (every line of its ip6 tables), nft's the IPv6-only rules of the stack rendered."""
    want = desired(APPLIED["stacks"])
    if backend == "iptables":
        fake = FakeBackend()
        converge(want, fake)
        return [f"-A {name} {spec}" for table in ("ip6 nat", "ip6 filter")
                for name, chain in fake.ruleset.tables[table].items() for spec in chain.rules]
    stack = want.stacks["demo"]
    rules = [r for key, net in stack.networks.items() for r in network_rules("demo", key, net)]
    for name, container in stack.containers.items():
        route = container.default_route
        rules += [r for m in container.ports for r in port_rules(
            port_key("demo", name, m), want.addresses[("demo", name, route)],
            want.addresses6.get(("demo", name, route)), m.container)]
    return [render_nft(r) for r in rules if r.family is Family.IPV6]


def test_v6_rules_round_trip_and_foreign_rules_stay(lab: Lab6) -> None:
    sandbox, backend = lab.sandbox, lab.backend
    foreign = _foreign(sandbox)
    assert run_controller(sandbox, "apply", APPLIED, backend)["errors"] == []
    if backend == "iptables":
        assert sorted(line for line in ip6tables_ours(sandbox) if line.startswith("-A ")) == sorted(
            _v6_lines_as_rendered(backend))
        assert our_nft(sandbox) is None
    else:
        listed = our_nft(sandbox) or ""
        assert all(f"\t\t{spec}\n" in listed for spec in _v6_lines_as_rendered(backend))
        assert ip6tables_ours(sandbox) == []
    assert heads(run_controller(sandbox, "plan", APPLIED, backend)) == []
    assert heads(run_controller(sandbox, "apply", APPLIED, backend)) == []

    routed_side = {**STACK, "networks": {**STACK["networks"], "side": {**STACK["networks"]["side"],
                                                                        "ipv6_nat": False}}}
    toggled = run_controller(sandbox, "apply", {"stacks": {"demo": routed_side}}, backend)
    assert heads(toggled) == [("update", "firewall", "demo/side")]
    (field,) = toggled["changes"][0]["fields"]
    assert field["new"] is None and "fd00:88:3::/64" in field["old"] and "rcbr2" in field["old"]
    assert _foreign(sandbox) == foreign

    other = "nftables" if backend == "iptables" else "iptables"
    moved = run_controller(sandbox, "apply", APPLIED, other)  # migration: nothing of ours left behind
    assert moved["errors"] == [] and any("left by" in c["reason"] for c in moved["changes"])
    assert (ip6tables_ours(sandbox) == []) if other == "nftables" else (our_nft(sandbox) is None)
    assert _foreign(sandbox) == foreign

    down = run_controller(sandbox, "apply", {"stacks": {}, "scope": ["demo"]}, other)
    assert down["errors"] == [] and ip6tables_ours(sandbox) == [] and our_nft(sandbox) is None
    assert _foreign(sandbox) == foreign


def test_v6_published_ports_answer_from_everywhere(lab: Lab6) -> None:
    # A UDP client that talked to the port before it was published holds an un-NATed entry.
    assert lab.ask("client", "udp", HOST6, 5353, source_port=40000) == FAILED
    assert run_controller(lab.sandbox, "apply", APPLIED, lab.backend)["issues"] == []

    assert eventually(lambda: lab.ask("client", "tcp", HOST6, 8080), "c1") == "c1"  # another machine
    assert lab.ask(None, "tcp", HOST6, 8080) == "c1"  # the host, on its own global address
    assert lab.ask("c1", "tcp", HOST6, 8080) == "c1"  # hairpin to its own port
    assert lab.ask("c2", "tcp", HOST6, 8080) == "c1"  # hairpin to a neighbour's port
    assert lab.ask("c1", "tcp", HOST6, 8081) == "c2"
    assert lab.ask("c4", "tcp", HOST6, 8080) == "c1"  # from another network, through the host
    assert lab.ask("client", "udp", HOST6, 5353, source_port=40000) == "c1:ping"
    assert lab.ask("c2", "udp", HOST6, 5353) == "c1:ping"
    assert lab.ask("client", "tcp", "10.99.0.1", 8080) == "c1"  # and IPv4 as before
    assert lab.ask("client", "tcp", HOST6, 9090) == FAILED  # an IPv4 host_ip publishes IPv4 only
    assert lab.ask("client", "tcp", "10.99.0.1", 9090) == "c1"


def test_a_host_service_on_v6_loopback_keeps_its_published_port(lab: Lab6) -> None:
    # [::1] cannot be DNATed to a container (the reply to ::1 would arrive on the bridge, which
    # the kernel drops), so it is left out, as Docker does: the host's own service answers there.
    lab.spawn(None, sys.executable, "-c", SERVE, "tcp", "8080", "host", "::1")
    assert eventually(lambda: lab.ask(None, "tcp", "::1", 8080), "host") == "host"
    assert run_controller(lab.sandbox, "apply", APPLIED, lab.backend)["issues"] == []
    assert eventually(lambda: lab.ask("client", "tcp", HOST6, 8080), "c1") == "c1"
    assert lab.ask(None, "tcp", HOST6, 8080) == "c1"
    assert lab.ask(None, "tcp", "::1", 8080) == "host"


def test_v6_routed_masqueraded_isolated_and_internal(lab: Lab6) -> None:
    run_controller(lab.sandbox, "apply", APPLIED, lab.backend)
    whoami = lambda netns: lab.ask(netns, "tcp", CLIENT6, 7000)  # noqa: E731
    assert eventually(lambda: whoami("c1"), "fd00:88:1::10") == "fd00:88:1::10"  # routed: no ipv6_nat
    assert whoami("c4") == HOST6  # ipv6_nat: masqueraded
    assert lab.ask("c2", "tcp", "fd00:88:1::10", 80) == "c1"  # a shared network, bridged
    assert lab.ask("c4", "tcp", "fd00:88:1::10", 80) == FAILED  # no shared network: isolated
    assert whoami("c3") == FAILED  # internal: no way out...
    assert lab.ask("c3", "tcp", HOST6, 8080) == FAILED  # ...not even to a published port
    assert lab.ask("c3", "tcp", "fd00:88:1::10", 80) == FAILED


def test_a_remapped_v6_udp_port_takes_effect_at_once(lab: Lab6) -> None:
    run_controller(lab.sandbox, "apply", APPLIED, lab.backend)
    assert eventually(lambda: lab.ask("client", "udp", HOST6, 5353, source_port=40001), "c1:ping") == "c1:ping"
    c1, c2 = STACK["containers"]["c1"], STACK["containers"]["c2"]
    moved = {**STACK, "containers": {**STACK["containers"], "c1": {**c1, "ports": ["8080:80"]},
                                     "c2": {**c2, "ports": ["8081:80", "5353:53/udp"]}}}
    run_controller(lab.sandbox, "apply", {"stacks": {"demo": moved}}, lab.backend)
    assert lab.ask("client", "udp", HOST6, 5353, source_port=40001) == "c2:ping"  # same flow, new target
