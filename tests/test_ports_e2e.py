"""Published ports, masquerade and isolation end to end, in both address families: real
containers made by `reconcile apply`, real packets, all inside a sandbox.

The stack `pub` has dual-stack networks front (10.90.1.0/24, fd00:90:1::/64, IPv6 routed) with
containers web and api, side (10.90.2.0/24, fd00:90:2::/64, IPv6 masqueraded: ipv6_nat) with
other, and back (internal, 10.90.3.0/24, fd00:90:3::/64) with vault. Every container runs the
host's python3 (the default rootfs is the host's own, read-only) answering its own name on tcp/80
and udp/53 in both families. A `client` namespace behind the foreign bridge `lan0` plays another
machine (10.99.0.2 and fd00:99::2; the host is 10.99.0.1, 10.99.0.4, fd00:99::1 and fd00:99::4
there) and tells who connects on tcp/7000 the address it arrived from. The host runs a service
of its own on [::1] at a port published on an IPv4 host_ip only (tcp/9090, and udp/5399): no
proxy of ours may take [::1] there. Docker-like foreign rules (FORWARD policy DROP, a DOCKER chain,
an admin rule in INPUT) are planted in iptables and ip6tables before the first apply and must
stay byte-identical.

Every test runs on both firewall backends (`--firewall-backend iptables` and `nftables`, set
through the environment; see tests/firewall_view.py): under the default `auto` the DROP policy
planted here would always pick iptables. On nftables, the admin also accepts our bridges in
those DROP FORWARD chains, as docs/spec.md (Firewall backends) says a host must: an accept in
our own table cannot override a foreign base chain's DROP. Traffic tests run once per family
(`family`) against one dual-stack lab per backend; the family's addresses are in ADDRESSES.

Clients never hang: every probe has a 1.5 s timeout, and one vantage point's probes run in
parallel in one process. Traffic only goes to addresses of namespaces made here.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pytest

from tests.firewall_canaries import CANARY, CANARY6, ip6tables_foreign
from tests.firewall_support import foreign_nft, foreign_rules
from tests.firewall_view import IPTABLES, NFTABLES, OUR_TABLE, backend_in_use, delete_rule, flush_chain, our_rules
from tests.sandbox import Sandbox
from tests.waiting import eventually

pytestmark = pytest.mark.kernel  # its Sandboxes are built in a module-scoped fixture

PYTHON = "/usr/bin/python3"
"""The host's python: present in every container that uses the host's root filesystem."""

SERVER = """\
import socket, sys, threading
name, address, tcp_port, udp_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def bound(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    return s
def answer(peer):
    return (name or peer[0].removeprefix("::ffff:")).encode()
u = bound(socket.SOCK_DGRAM, udp_port)
def udp():
    while True:
        peer = u.recvfrom(2048)[1]
        u.sendto(answer(peer), peer)
threading.Thread(target=udp, daemon=True).start()
s = bound(socket.SOCK_STREAM, tcp_port)
s.listen(64)
while True:
    conn, peer = s.accept()
    conn.sendall(answer(peer))
    conn.close()
"""
"""A service answering, on both families (one AF_INET6 socket with IPV6_V6ONLY off serves IPv4
too), its name, or given "" the address a client came from: argv name, address to bind, tcp
port, udp port (bound before tcp listens, so a service that answers on tcp answers on udp too)."""

PROBE = """\
import json, socket, sys, threading
def probe(i, protocol, address, port, source_port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(1.5)
    try:
        if source_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source_port))
        if protocol == "udp":
            s.sendto(b"ping", (address, port))
            answers[i] = s.recvfrom(2048)[0].decode()
        else:
            s.connect((address, port))
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            answers[i] = data.decode()
    except OSError:
        pass
    finally:
        s.close()
probes = json.loads(sys.argv[1])
answers = ["failed"] * len(probes)
threads = [threading.Thread(target=probe, args=(i, *p)) for i, p in enumerate(probes)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(answers))
"""
"""Each probe (protocol, address, port, source port or 0), over the address's family: one TCP
exchange read to EOF, or one UDP datagram and its answer; "failed" on a refusal, an unreachable
network or a timeout."""

FAILED = "failed"
HOST, CLIENT = "host", "client"
"""Vantage points besides the containers (named by their key)."""
HOST_SERVICE = "host"
"""What the host's own service on [::1] answers."""

TOPOLOGY = f"""
set -e
ip link add lan0 type bridge
ip addr add 10.99.0.1/24 dev lan0
ip addr add 10.99.0.4/24 dev lan0
ip addr add fd00:99::1/64 dev lan0 nodad
ip addr add fd00:99::4/64 dev lan0 nodad preferred_lft 0  # deprecated: never a source, as 10.99.0.4
ip link set lan0 up
ip netns add client
ip link add lan0-client type veth peer name eth0 netns client
ip link set lan0-client master lan0 up
ip -n client link set lo up
ip -n client addr add 10.99.0.2/24 dev eth0
ip -n client addr add fd00:99::2/64 dev eth0 nodad
ip -n client link set eth0 up
ip -n client route add default via 10.99.0.1
ip -n client -6 route add default via fd00:99::1
ip netns exec client {PYTHON} -c {shlex.quote(SERVER)} "" :: 7000 7000 >/dev/null 2>&1 &
{PYTHON} -c {shlex.quote(SERVER)} {HOST_SERVICE} ::1 9090 5399 >/dev/null 2>&1 &
"""
"""Another machine on a foreign bridge of the host (it routes through the host) telling who
connects, and the host's own service on [::1]."""

ADMIN_ACCEPTS_OUR_BRIDGES = "*filter\n-A FORWARD -i rc-+ -j ACCEPT\n-A FORWARD -o rc-+ -j ACCEPT\nCOMMIT\n"
"""What an admin adds under a foreign FORWARD DROP policy for the nftables backend's traffic
(in iptables and ip6tables)."""

NETWORK_OF = {"web": "front", "api": "front", "other": "side", "vault": "back"}
"""Each container's one network."""


@dataclass(frozen=True)
class Addresses:
    """One family's addresses in the lab."""

    name: str
    host: str
    """The host on lan0, where the other machine sends its traffic."""
    host_too: str
    """The host's second address on lan0."""
    client: str
    gateway: Mapping[str, str]
    """Each network's bridge address."""
    container: Mapping[str, str]
    """Each container's static address."""
    seen_as: Mapping[str, str]
    """What the other machine sees as the source of a connection from web and from other."""

    @property
    def ip6(self) -> bool:
        return ":" in self.host


V4 = Addresses("v4", "10.99.0.1", "10.99.0.4", "10.99.0.2",
               {"front": "10.90.1.1", "side": "10.90.2.1", "back": "10.90.3.1"},
               {"web": "10.90.1.10", "api": "10.90.1.11", "other": "10.90.2.10", "vault": "10.90.3.10"},
               {"web": "10.99.0.1", "other": "10.99.0.1"})  # IPv4 is masqueraded
V6 = Addresses("v6", "fd00:99::1", "fd00:99::4", "fd00:99::2",
               {"front": "fd00:90:1::1", "side": "fd00:90:2::1", "back": "fd00:90:3::1"},
               {"web": "fd00:90:1::10", "api": "fd00:90:1::11", "other": "fd00:90:2::10", "vault": "fd00:90:3::10"},
               {"web": "fd00:90:1::10", "other": "fd00:99::1"})  # front routes IPv6, side masquerades it
ADDRESSES = (V4, V6)

PORTS = {
    "web": ["8080:80", "5353:53/udp", "10.99.0.1:9090:80", "127.0.0.1:8443:80"],
    "api": ["8081:80"],
    "other": ["8082:80", "5354:53/udp"],
    "vault": [],
}
VAULT_NETNS = "rc-pub_vault"
"""vault's network namespace under /run/netns (the documented place, for `ip netns exec`)."""


def stack_text(ports: Mapping[str, Sequence[str]]) -> str:
    containers = "".join(
        f"  {name}:\n"
        f"    command: {json.dumps([PYTHON, '-c', SERVER, name, '::', '80', '53'])}\n"
        f"    networks: {{{network}: {{ip: {V4.container[name]}, ip6: \"{V6.container[name]}\"}}}}\n"
        f"    ports: {json.dumps(list(ports[name]))}\n"
        for name, network in NETWORK_OF.items())
    return ("name: pub\n"
            "networks:\n"
            "  front: {subnet: 10.90.1.0/24, subnet6: \"fd00:90:1::/64\"}\n"
            "  side: {subnet: 10.90.2.0/24, subnet6: \"fd00:90:2::/64\", ipv6_nat: true}\n"
            "  back: {subnet: 10.90.3.0/24, subnet6: \"fd00:90:3::/64\", internal: true}\n"
            f"containers:\n{containers}")


class Lab:
    """The sandbox with the other machine and the foreign canary, and the stack applied."""

    def __init__(self, sandbox: Sandbox, backend_choice: str):
        self.sandbox = sandbox
        sandbox.env_overrides["RECONCILE_FIREWALL_BACKEND"] = backend_choice
        self.path = str(sandbox.write("stack.yaml", stack_text(PORTS)))
        sandbox.sh(TOPOLOGY)
        sandbox.run("iptables-restore", "--noflush", input=CANARY)  # FORWARD policy DROP from here
        sandbox.run("ip6tables-restore", "--noflush", input=CANARY6)
        self.backend = backend_in_use(sandbox)
        assert self.backend == {"iptables": IPTABLES, "nftables": NFTABLES}[backend_choice]
        if self.backend == NFTABLES:
            for restore in ("iptables-restore", "ip6tables-restore"):
                sandbox.run(restore, "--noflush", input=ADMIN_ACCEPTS_OUR_BRIDGES)
        self.canary = foreign_rules(sandbox), ip6tables_foreign(sandbox), self._inet_tables()
        self.apply()
        services = [("tcp", a.container[name], 80) for a in ADDRESSES for name in NETWORK_OF] + [
            ("tcp", a.client, 7000) for a in ADDRESSES] + [("tcp", "::1", 9090)]
        ready = [*NETWORK_OF, *NETWORK_OF, V4.host, V6.host, HOST_SERVICE]
        assert eventually(lambda: self.probe(HOST, *services), ready, timeout=10.0) == ready

    def _inet_tables(self) -> dict[str, str]:
        return {name: text for name, text in foreign_nft(self.sandbox).items() if name.startswith("inet ")}

    def apply(self) -> str:
        result = self.sandbox.reconcile("apply", self.path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def diff(self) -> tuple[int, str]:
        result = self.sandbox.reconcile("diff", self.path)
        return result.returncode, result.stdout

    def probe(self, where: str, *probes: tuple[str, str, int] | tuple[str, str, int, int]) -> list[str]:
        """The answers to probes (protocol, address, port[, source port]) sent from the host,
        from the other machine, or from inside a container (through `reconcile exec`)."""
        argv = [PYTHON, "-c", PROBE, json.dumps([[*p, 0][:4] for p in probes])]
        if where == CLIENT:
            result = self.sandbox.run("ip", "netns", "exec", CLIENT, *argv, check=False, timeout=15)
        elif where == HOST:
            result = self.sandbox.run(*argv, check=False, timeout=15)
        else:
            result = self.sandbox.reconcile("exec", f"pub/{where}", "--", *argv, timeout=15)
        assert result.returncode == 0, (where, result.stderr)
        return json.loads(result.stdout)

    def pids(self) -> dict[str, int]:
        document = json.loads(self.sandbox.reconcile("status", "-o", "json").stdout)
        return {c["name"]: c["pid"] for s in document["stacks"] for c in s["containers"]}

    def assert_canary_intact(self) -> None:
        """Every foreign line of iptables-save and ip6tables-save, and every foreign inet table,
        as it was before our first apply: the canary's rules still there, in the same order,
        with nothing of ours between them."""
        assert (foreign_rules(self.sandbox), ip6tables_foreign(self.sandbox), self._inet_tables()) == self.canary
        for planted, saved in ((CANARY, self.canary[0]), (CANARY6, self.canary[1])):
            assert all(line in saved.splitlines() for line in planted.splitlines() if line.startswith("-A "))


BACKEND_CHOICES = ("iptables", "nftables")


@pytest.fixture(scope="module", params=BACKEND_CHOICES)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab per backend shared by the tests that only send traffic."""
    sandbox = Sandbox(tmp_path_factory.mktemp("ports"))
    try:
        yield Lab(sandbox, request.param)
    finally:
        sandbox.close()


@pytest.fixture(params=BACKEND_CHOICES)
def own_lab(request: pytest.FixtureRequest, sandbox: Sandbox) -> Lab:
    """A lab of the test's own, for tests that drift or change the stack."""
    return Lab(sandbox, request.param)


@pytest.fixture(params=ADDRESSES, ids=lambda a: a.name)
def family(request: pytest.FixtureRequest) -> Addresses:
    """The address family a traffic test sends its probes in."""
    return request.param


def test_another_machine_reaches_published_ports_on_every_host_address(lab: Lab, family: Addresses) -> None:
    a = family
    assert lab.probe(CLIENT, ("tcp", a.host, 8080), ("tcp", a.host_too, 8080),
                     ("tcp", a.host, 8081), ("tcp", a.host_too, 8082)) == ["web", "web", "api", "other"]
    # All of it under Docker's FORWARD policy, which reconcile leaves as it found it.
    for tool in ("iptables", "ip6tables"):
        assert lab.sandbox.run(tool, "-S", "FORWARD").stdout.splitlines()[0] == "-P FORWARD DROP"
    lab.assert_canary_intact()


def test_the_host_reaches_published_ports_on_its_own_addresses(lab: Lab, family: Addresses) -> None:
    a = family
    assert lab.probe(HOST, ("tcp", a.host, 8080), ("tcp", a.host_too, 8080), ("tcp", a.gateway["front"], 8080),
                     ("tcp", a.gateway["side"], 8081)) == ["web", "web", "web", "api"]


def test_the_host_reaches_published_ports_on_both_loopbacks(lab: Lab) -> None:
    # 8443 is published on 127.0.0.1 only, 9090 on 10.99.0.1 only.
    assert lab.probe(HOST, ("tcp", "127.0.0.1", 8080), ("tcp", "127.0.0.1", 8082), ("udp", "127.0.0.1", 5353),
                     ("tcp", "127.0.0.1", 8443), ("tcp", "127.0.0.1", 9090)) == ["web", "other", "web", "web", FAILED]
    # [::1] through the proxies, for the ports published over IPv6; a port narrowed to an IPv4
    # host_ip is not on [::1], and the host's own service there keeps it.
    assert lab.probe(HOST, ("tcp", "::1", 8080), ("udp", "::1", 5353), ("tcp", "::1", 8082), ("udp", "::1", 5354),
                     ("tcp", "::1", 8081), ("tcp", "::1", 8443), ("tcp", "::1", 9090), ("udp", "::1", 5399)) == [
        "web", "web", "other", "other", "api", FAILED, HOST_SERVICE, HOST_SERVICE]


def test_containers_reach_published_ports_through_the_host_hairpin(lab: Lab, family: Addresses) -> None:
    a = family
    assert lab.probe("web", ("tcp", a.host, 8080), ("tcp", a.host, 8081),
                     ("tcp", a.gateway["front"], 8080)) == ["web", "api", "web"]
    assert lab.probe("api", ("tcp", a.host, 8080), ("tcp", a.host_too, 8081)) == ["web", "api"]
    # From another network: a published port is open to every network, as to any machine.
    assert lab.probe("other", ("tcp", a.host, 8080), ("tcp", a.host, 8082)) == ["web", "other"]


def test_udp_ports_answer_from_everywhere(lab: Lab, family: Addresses) -> None:
    a = family
    assert lab.probe(CLIENT, ("udp", a.host, 5353), ("udp", a.host_too, 5354)) == ["web", "other"]
    assert lab.probe(HOST, ("udp", a.host, 5353), ("udp", a.host_too, 5354)) == ["web", "other"]
    assert lab.probe("web", ("udp", a.host, 5353), ("udp", a.host, 5354)) == ["web", "other"]
    assert lab.probe("other", ("udp", a.host_too, 5353)) == ["web"]


def test_host_ip_narrows_a_port_to_one_address(lab: Lab, family: Addresses) -> None:
    a = family
    # 9090 is published on 10.99.0.1 only (so on no IPv6 address), 8443 on 127.0.0.1 only.
    narrowed = FAILED if a.ip6 else "web"
    assert lab.probe(CLIENT, ("tcp", a.host, 9090), ("tcp", a.host_too, 9090),
                     ("tcp", a.host, 8443)) == [narrowed, FAILED, FAILED]
    assert lab.probe(HOST, ("tcp", a.host, 9090), ("tcp", a.host_too, 9090),
                     ("tcp", a.host, 8443)) == [narrowed, FAILED, FAILED]
    assert lab.probe("api", ("tcp", a.host, 9090), ("tcp", a.host_too, 9090)) == [narrowed, FAILED]


def test_internal_networks_have_no_way_out_and_networks_are_isolated(lab: Lab, family: Addresses) -> None:
    a = family
    # Controls first: a non-internal network gets out (IPv4 masqueraded, IPv6 routed on front
    # and masqueraded on side) and reaches its neighbours.
    assert lab.probe("web", ("tcp", a.client, 7000), ("tcp", a.container["api"], 80),
                     ("tcp", a.container["other"], 80), ("tcp", a.container["vault"], 80)) == [
        a.seen_as["web"], "api", FAILED, FAILED]
    assert lab.probe("other", ("tcp", a.client, 7000), ("tcp", a.container["web"], 80)) == [
        a.seen_as["other"], FAILED]
    # The internal network: no way out, not even to a published port through its gateway, and
    # not even for a container that routes around the missing default route.
    route = ["ip", "-n", VAULT_NETNS, "-6" if a.ip6 else "-4", "route"]
    lab.sandbox.run(*route, "add", "default", "via", a.gateway["back"])
    try:
        assert lab.probe("vault", ("tcp", a.client, 7000), ("tcp", a.gateway["back"], 8080),
                         ("tcp", a.host, 8080), ("tcp", a.container["web"], 80),
                         ("udp", a.gateway["back"], 5353)) == [FAILED] * 5
    finally:
        lab.sandbox.run(*route, "del", "default")
    assert lab.probe(CLIENT, ("tcp", a.container["vault"], 80)) == [FAILED]


def _rule(comment: str, spec: str) -> str:
    return spec.replace("COMMENT", f'-m comment --comment "reconcile/v1 {comment}"')


def _nft(comment: str, spec: str) -> str:
    return f'{spec} comment "reconcile/v1 {comment}"'


RULES = {  # the same rules as each backend prints them
    IPTABLES: {
        "dnat 8080": _rule("port pub/web/8080/tcp",
                           "-p tcp -m tcp --dport 8080 COMMENT -j DNAT --to-destination 10.90.1.10:80"),
        "dnat6 8080": _rule("port pub/web/8080/tcp",
                            "! -d ::1/128 -p tcp -m tcp --dport 8080 COMMENT "
                            "-j DNAT --to-destination [fd00:90:1::10]:80"),
        "accept dnat": _rule("network pub/front", "-o rc-pub-front -m conntrack --ctstate DNAT COMMENT -j ACCEPT"),
        "snat loopback": _rule("network pub/front", "-s 127.0.0.0/8 -o rc-pub-front COMMENT -j MASQUERADE"),
        "snat6 side": _rule("network pub/side", "-s fd00:90:2::/64 ! -o rc-pub-side COMMENT -j MASQUERADE"),
        "prerouting hook": _rule("chains", "-m addrtype --dst-type LOCAL COMMENT -j RECONCILE-DNAT"),
        "forward hook": _rule("chains", "COMMENT -j RECONCILE-FORWARD"),
    },
    NFTABLES: {
        "dnat 8080": _nft("port pub/web/8080/tcp", "tcp dport 8080 dnat ip to 10.90.1.10:80"),
        "dnat6 8080": _nft("port pub/web/8080/tcp", "ip6 daddr != ::1 tcp dport 8080 dnat ip6 to [fd00:90:1::10]:80"),
        "accept dnat": _nft("network pub/front", 'oifname "rc-pub-front" ct status dnat accept'),
        "snat loopback": _nft("network pub/front", 'ip saddr 127.0.0.0/8 oifname "rc-pub-front" masquerade'),
        "snat6 side": _nft("network pub/side", 'ip6 saddr fd00:90:2::/64 oifname != "rc-pub-side" masquerade'),
        "prerouting hook": _nft("chains", "fib daddr type local jump RECONCILE-DNAT"),
        "forward hook": _nft("chains", "jump RECONCILE-FORWARD"),
    },
}
NAT6 = {IPTABLES: "ip6 nat", NFTABLES: "nat"}
"""Where the plan says an IPv6 nat rule goes: ip6tables' nat table, or the one inet table."""

Probe = tuple[str, tuple[str, str, int], str, str]
"""A probe a drift breaks: vantage point, probe, the answer while drifted, the answer repaired."""
TO_8080 = (CLIENT, ("tcp", V4.host, 8080), FAILED, "web")


class Drift(NamedTuple):
    verb: str
    """"delete" a rule or "flush" a chain."""
    chain: str
    spec: str | None
    """The rule to delete (None: flush the chain)."""
    expected: list[str]
    """Lines `diff` must print."""
    broken: Probe | None
    ip6: bool = False
    """Made with ip6tables on the iptables backend."""


def drifts(backend: str) -> list[Drift]:
    rules = RULES[backend]
    on_iptables = backend == IPTABLES
    return [
        *(Drift("delete", "RECONCILE-DNAT", rules[dnat],  # its rule of the other family stays: in place
                ["  ~ port pub/web/8080/tcp (in place: differs from the spec)",
                 f"      {table}: (none) → -A RECONCILE-DNAT {rules[dnat]}",
                 "Plan: 0 to add, 1 to change, 0 to destroy."], (CLIENT, ("tcp", a.host, 8080), FAILED, "web"),
                ip6=a.ip6)
          for a, dnat, table in ((V4, "dnat 8080", "nat"), (V6, "dnat6 8080", NAT6[backend]))),
        Drift("flush", "RECONCILE-ACCEPT", None,
              ["  ~ firewall pub/front (in place: differs from the spec)",
               f"      filter: (none) → -A RECONCILE-ACCEPT {rules['accept dnat']}",
               "  ~ firewall pub/side (in place: differs from the spec)",
               "  ~ firewall pub/back (in place: differs from the spec)",
               "Plan: 0 to add, 3 to change, 0 to destroy."],
              # iptables: FORWARD's DROP policy takes over; nftables: the admin's accepts stand in
              TO_8080 if on_iptables else None),
        Drift("flush", "RECONCILE-SNAT", None,
              ["  ~ firewall pub/front (in place: differs from the spec)",
               f"      nat: (none) → -A RECONCILE-SNAT {rules['snat loopback']}",
               "  ~ firewall pub/side (in place: differs from the spec)",
               "Plan: 0 to add, 2 to change, 0 to destroy."],
              (HOST, ("tcp", "127.0.0.1", 8080), FAILED, "web")),  # 127.0.0.1 cannot leave unmasqueraded
        Drift("delete", "RECONCILE-SNAT", rules["snat6 side"],
              ["  ~ firewall pub/side (in place: differs from the spec)",
               f"      {NAT6[backend]}: (none) → -A RECONCILE-SNAT {rules['snat6 side']}",
               "Plan: 0 to add, 1 to change, 0 to destroy."],
              # unmasqueraded: routed with its own address
              ("other", ("tcp", V6.client, 7000), V6.container["other"], V6.seen_as["other"]),
              ip6=True),
        Drift("delete", "PREROUTING", rules["prerouting hook"],
              ["  ~ firewall chains (in place: differs from the layout)",
               f"      nat: (none) → -A PREROUTING {rules['prerouting hook']}",
               "Plan: 0 to add, 1 to change, 0 to destroy."], TO_8080),
        Drift("delete", "FORWARD", rules["forward hook"],
              ["  ~ firewall chains (in place: differs from the layout)",
               f"      filter: (none) → -A FORWARD {rules['forward hook']}",
               "Plan: 0 to add, 1 to change, 0 to destroy."],
              # iptables: FORWARD's DROP policy takes over; nftables: networks are no longer isolated
              TO_8080 if on_iptables else ("web", ("tcp", V4.container["other"], 80), "other", FAILED)),
    ]


def test_drift_is_named_by_diff_and_repaired_by_apply(own_lab: Lab) -> None:
    lab = own_lab
    assert lab.apply() == "No changes. The host matches the spec.\n"
    assert lab.diff() == (0, "No changes. The host matches the spec.\n")
    pids = lab.pids()
    for drift in drifts(lab.backend):
        made = (drift.verb, drift.chain, drift.spec, drift.ip6)
        if drift.spec is None:
            flush_chain(lab.sandbox, lab.backend, drift.chain, ip6=drift.ip6)
        else:
            delete_rule(lab.sandbox, lab.backend, drift.chain, drift.spec, ip6=drift.ip6)
        if drift.broken:
            assert lab.probe(drift.broken[0], drift.broken[1]) == [drift.broken[2]], made
        code, out = lab.diff()
        assert code == 2 and set(drift.expected) <= set(out.splitlines()), (made, out)
        lab.apply()
        assert lab.diff()[0] == 0, made
        if drift.broken:
            assert lab.probe(drift.broken[0], drift.broken[1]) == [drift.broken[3]], made
        lab.assert_canary_intact()
    # A killed [::1] proxy: named by diff, started again by apply.
    (killed,) = [pid for pid, argv in lab.sandbox.proxies().items()
                 if argv.startswith("reconcile/v1 port pub/web/8080/tcp ")]
    lab.sandbox.run("kill", "-KILL", str(killed))
    assert lab.probe(HOST, ("tcp", "::1", 8080)) == [FAILED]
    code, out = lab.diff()
    assert code == 2 and "  + proxy pub/web/8080/tcp (not running)" in out.splitlines(), out
    lab.apply()
    assert lab.diff()[0] == 0 and lab.probe(HOST, ("tcp", "::1", 8080)) == ["web"]
    assert lab.pids() == pids  # rules and proxies are repaired under running containers
    # An admin's rule jumping into one of our chains (iptables: from INPUT; nftables: from a
    # chain of theirs in our table, the only place an nft jump can come from): `down` removes
    # everything else (in both families), keeps that chain (emptied) and names the rule; once
    # the admin deletes it, nothing of ours is left.
    if lab.backend == NFTABLES:
        jumping, theirs = ["jump", "RECONCILE-INPUT"], ["chain", *OUR_TABLE.split(), "admin"]
        lab.sandbox.run("nft", "add", *theirs)
        lab.sandbox.run("nft", "add", "rule", *OUR_TABLE.split(), "admin", *jumping)
        error, where = "chain inet reconcile RECONCILE-INPUT", "chain inet reconcile admin"
        left = [f"table {OUR_TABLE} {{", "chain RECONCILE-INPUT {", "}", "", "chain admin {", "jump RECONCILE-INPUT",
                "}", "}"]
    else:
        jumping, where = ["-j", "RECONCILE-INPUT"], "chain filter INPUT"
        lab.sandbox.run("iptables", "-A", "INPUT", *jumping)
        error, left = "chain filter RECONCILE-INPUT", [":RECONCILE-INPUT - [0:0]"]
    result = lab.sandbox.reconcile("down", lab.path)
    assert (result.returncode, result.stderr) == (1, (
        f"error: {error} was emptied but not deleted: rules that are not reconcile's to delete jump to it "
        f"(`{' '.join(jumping)}` in {where}); delete them and run again\n"))
    assert our_rules(lab.sandbox, lab.backend) == left
    assert lab.sandbox.netns_names() == [CLIENT] and lab.sandbox.our_links() == []
    if lab.backend == NFTABLES:
        lab.sandbox.run("nft", "flush", *theirs)
        lab.sandbox.run("nft", "delete", *theirs)
    else:
        lab.sandbox.run("iptables", "-D", "INPUT", *jumping)
    assert lab.sandbox.reconcile("down", lab.path).returncode == 0
    assert our_rules(lab.sandbox, lab.backend) == []
    lab.assert_canary_intact()


def test_a_changed_udp_mapping_takes_effect_at_once_and_down_leaves_nothing(own_lab: Lab) -> None:
    lab = own_lab
    # Two UDP flows from the other machine: one to a published port, one to a port published
    # only below; each leaves a conntrack entry that outlives a rule change unless flushed.
    flows = [("udp", V4.host, 5353, 40001), ("udp", V4.host, 5355, 40002),
             ("udp", V6.host, 5353, 40003), ("udp", V6.host, 5355, 40004)]
    assert lab.probe(CLIENT, *flows) == ["web", FAILED] * 2
    pids = lab.pids()
    moved = {**PORTS, "web": [p for p in PORTS["web"] if p != "5353:53/udp"] + ["5355:53/udp"],
             "api": [*PORTS["api"], "5353:53/udp"]}
    lab.sandbox.write("stack.yaml", stack_text(moved))
    code, out = lab.diff()
    assert code == 2 and {"  - port pub/web/5353/udp (no longer in the spec)",
                          "  + port pub/api/5353/udp (not on the host)",
                          "  + port pub/web/5355/udp (not on the host)",
                          "  - proxy pub/web/5353/udp (no longer in the spec)",
                          "  + proxy pub/api/5353/udp (not running)"} <= set(out.splitlines()), out
    lab.apply()
    assert lab.probe(CLIENT, *flows) == ["api", "web"] * 2  # the same flows, the new targets, at once
    assert lab.probe(HOST, ("udp", "::1", 5353), ("udp", "::1", 5355)) == ["api", "web"]  # and their proxies
    assert lab.pids() == pids  # ports change in place

    assert lab.sandbox.reconcile("down", lab.path).returncode == 0
    for saved in (lab.sandbox.run(*argv).stdout for argv in (["iptables-save"], ["ip6tables-save"],
                                                             ["nft", "list", "ruleset"])):
        assert "reconcile" not in saved.lower(), saved
    assert our_rules(lab.sandbox, lab.backend) == [] and lab.sandbox.proxies() == {}
    lab.assert_canary_intact()
    assert lab.probe(CLIENT, ("tcp", V4.host, 8080), ("tcp", V6.host, 8080), flows[0], flows[2]) == [FAILED] * 4
    assert lab.probe(HOST, ("tcp", "::1", 8080), ("udp", "::1", 5355)) == [FAILED] * 2
    assert lab.sandbox.netns_names() == [CLIENT] and lab.sandbox.our_links() == []


def test_a_host_service_on_ipv6_loopback_is_a_located_conflict(own_lab: Lab) -> None:
    lab = own_lab
    lab.sandbox.sh(f"{PYTHON} -c {shlex.quote(SERVER)} {HOST_SERVICE} ::1 8084 5398 >/dev/null 2>&1 &")
    assert eventually(lambda: lab.probe(HOST, ("tcp", "::1", 8084)), [HOST_SERVICE]) == [HOST_SERVICE]
    before = our_rules(lab.sandbox, lab.backend), lab.sandbox.proxies()
    lab.sandbox.write("stack.yaml", stack_text({**PORTS, "api": [*PORTS["api"], "8084:80"]}))
    result = lab.sandbox.reconcile("apply", lab.path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.fullmatch(rf"{re.escape(lab.path)}:14:24: containers\.api\.ports\[1\]: host port \[::1\]:8084/tcp "
                        r"is in use: python3 \(pid \d+\) listening on \[::1\]:8084/tcp\n", result.stderr), result.stderr
    assert (our_rules(lab.sandbox, lab.backend), lab.sandbox.proxies()) == before  # nothing touched
    assert lab.probe(HOST, ("tcp", "::1", 8084)) == [HOST_SERVICE]
