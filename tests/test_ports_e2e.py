"""Published ports, masquerade and isolation end to end: real containers made by `reconcile
apply`, real packets, all inside a sandbox.

The stack `pub` has networks front (10.90.1.0/24) with containers web and api, side
(10.90.2.0/24) with other, and back (internal, 10.90.3.0/24) with vault. Every container runs
the host's python3 (the default rootfs is the host's own, read-only) answering its own name on
tcp/80 and udp/53. A `client` namespace behind the foreign bridge `lan0` plays another machine
(10.99.0.2; the host is 10.99.0.1 and 10.99.0.4 there) and tells who connects on tcp/7000 the
address it arrived from. Docker-like foreign rules (FORWARD policy DROP, a DOCKER chain, an
admin rule in INPUT) are planted before the first apply and must stay byte-identical.

Every test runs on both firewall backends (`--firewall-backend iptables` and `nftables`, set
through the environment; see tests/firewall_view.py): under the default `auto` the DROP policy
planted here would always pick iptables. On nftables, the admin also accepts our bridges in
that DROP FORWARD chain, as docs/spec.md (Firewall backends) says a host must: an accept in our
own table cannot override a foreign base chain's DROP.

Clients never hang: every probe has a 1.5 s timeout, and one vantage point's probes run in
parallel in one process. Traffic only goes to addresses of namespaces made here.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping, Sequence

import pytest

from tests.firewall_view import IPTABLES, NFTABLES, backend_in_use, delete_rule, flush_chain, our_rules
from tests.sandbox import Sandbox
from tests.test_firewall_kernel import CANARY
from tests.test_firewall_support import foreign_nft, foreign_rules
from tests.waiting import eventually

PYTHON = "/usr/bin/python3"
"""The host's python: present in every container that uses the host's root filesystem."""

SERVER = """\
import socket, sys, threading
name = sys.argv[1].encode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 53))
def udp():
    while True:
        u.sendto(name, u.recvfrom(2048)[1])
threading.Thread(target=udp, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(64)
while True:
    conn = s.accept()[0]
    conn.sendall(name)
    conn.close()
"""
"""A container's service: its name, on tcp/80 and udp/53 (bound before tcp/80 listens, so a
service that answers on tcp answers on udp too)."""

WHOAMI = """\
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(64)
while True:
    conn, peer = s.accept()
    conn.sendall(peer[0].encode())
    conn.close()
"""
"""The other machine's service: the source address a connection arrived with."""

PROBE = """\
import json, socket, sys, threading
def probe(i, protocol, address, port, source_port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(1.5)
    try:
        if source_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", source_port))
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
"""Each probe (protocol, address, port, source port or 0): one TCP exchange read to EOF, or one
UDP datagram and its answer; "failed" on a refusal, an unreachable network or a timeout."""

FAILED = "failed"
HOST, CLIENT = "host", "client"
"""Vantage points besides the containers (named by their key)."""

TOPOLOGY = """
set -e
ip link add lan0 type bridge
ip addr add 10.99.0.1/24 dev lan0
ip addr add 10.99.0.4/24 dev lan0
ip link set lan0 up
ip netns add client
ip link add lan0-client type veth peer name eth0 netns client
ip link set lan0-client master lan0 up
ip -n client link set lo up
ip -n client addr add 10.99.0.2/24 dev eth0
ip -n client link set eth0 up
ip -n client route add default via 10.99.0.1
"""
"""Another machine on a foreign bridge of the host; it routes through the host."""

ADMIN_ACCEPTS_OUR_BRIDGES = "*filter\n-A FORWARD -i rc-+ -j ACCEPT\n-A FORWARD -o rc-+ -j ACCEPT\nCOMMIT\n"
"""What an admin adds under a foreign FORWARD DROP policy for the nftables backend's traffic."""

ATTACHMENTS = {"web": ("front", "10.90.1.10"), "api": ("front", "10.90.1.11"),
               "other": ("side", "10.90.2.10"), "vault": ("back", "10.90.3.10")}
"""Each container's one network and static address."""
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
        f"    command: {json.dumps([PYTHON, '-c', SERVER, name])}\n"
        f"    networks: {{{network}: {{ip: {address}}}}}\n"
        f"    ports: {json.dumps(list(ports[name]))}\n"
        for name, (network, address) in ATTACHMENTS.items())
    return ("name: pub\n"
            "networks:\n"
            "  front: {subnet: 10.90.1.0/24}\n"
            "  side: {subnet: 10.90.2.0/24}\n"
            "  back: {subnet: 10.90.3.0/24, internal: true}\n"
            f"containers:\n{containers}")


class Lab:
    """The sandbox with the other machine and the foreign canary, and the stack applied."""

    def __init__(self, sandbox: Sandbox, backend_choice: str):
        self.sandbox = sandbox
        sandbox.env_overrides["RECONCILE_FIREWALL_BACKEND"] = backend_choice
        self.path = str(sandbox.write("stack.yaml", stack_text(PORTS)))
        sandbox.sh(TOPOLOGY)
        sandbox.sh(f"ip netns exec {CLIENT} {PYTHON} -c {shlex.quote(WHOAMI)} >/dev/null 2>&1 &")
        sandbox.run("iptables-restore", "--noflush", input=CANARY)  # FORWARD policy DROP from here
        self.backend = backend_in_use(sandbox)
        assert self.backend == {"iptables": IPTABLES, "nftables": NFTABLES}[backend_choice]
        if self.backend == NFTABLES:
            sandbox.run("iptables-restore", "--noflush", input=ADMIN_ACCEPTS_OUR_BRIDGES)
        self.canary = foreign_rules(sandbox)
        self.canary_nft = {name: text for name, text in foreign_nft(sandbox).items() if name.startswith("inet ")}
        self.apply()
        services = [("tcp", address, 80) for _, address in ATTACHMENTS.values()] + [("tcp", "10.99.0.2", 7000)]
        ready = [*ATTACHMENTS, "10.99.0.1"]
        assert eventually(lambda: self.probe(HOST, *services), ready, timeout=10.0) == ready

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
        """Every foreign line of iptables-save as it was before our first apply: the canary's
        rules still there, in the same order, with nothing of ours between them."""
        assert foreign_rules(self.sandbox) == self.canary
        assert {name: text for name, text in foreign_nft(self.sandbox).items() if name.startswith("inet ")} \
            == self.canary_nft
        assert all(line in self.canary.splitlines() for line in CANARY.splitlines() if line.startswith("-A "))


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


def test_another_machine_reaches_published_ports_on_every_host_address(lab: Lab) -> None:
    assert lab.probe(CLIENT, ("tcp", "10.99.0.1", 8080), ("tcp", "10.99.0.4", 8080),
                     ("tcp", "10.99.0.1", 8081), ("tcp", "10.99.0.4", 8082)) == ["web", "web", "api", "other"]
    # All of it under Docker's FORWARD policy, which reconcile leaves as it found it.
    assert lab.sandbox.run("iptables", "-S", "FORWARD").stdout.splitlines()[0] == "-P FORWARD DROP"
    lab.assert_canary_intact()


def test_the_host_reaches_published_ports_on_loopback_and_its_own_addresses(lab: Lab) -> None:
    assert lab.probe(HOST, ("tcp", "127.0.0.1", 8080), ("tcp", "10.99.0.1", 8080),
                     ("tcp", "10.99.0.4", 8080), ("tcp", "10.90.1.1", 8080), ("tcp", "10.90.2.1", 8081),
                     ("tcp", "127.0.0.1", 8082)) == ["web", "web", "web", "web", "api", "other"]


def test_containers_reach_published_ports_through_the_host_hairpin(lab: Lab) -> None:
    assert lab.probe("web", ("tcp", "10.99.0.1", 8080), ("tcp", "10.99.0.1", 8081),
                     ("tcp", "10.90.1.1", 8080)) == ["web", "api", "web"]
    assert lab.probe("api", ("tcp", "10.99.0.1", 8080), ("tcp", "10.99.0.4", 8081)) == ["web", "api"]
    # From another network: a published port is open to every network, as to any machine.
    assert lab.probe("other", ("tcp", "10.99.0.1", 8080), ("tcp", "10.99.0.1", 8082)) == ["web", "other"]


def test_udp_ports_answer_from_everywhere(lab: Lab) -> None:
    assert lab.probe(CLIENT, ("udp", "10.99.0.1", 5353), ("udp", "10.99.0.4", 5354)) == ["web", "other"]
    assert lab.probe(HOST, ("udp", "127.0.0.1", 5353), ("udp", "10.99.0.1", 5353),
                     ("udp", "127.0.0.1", 5354)) == ["web", "web", "other"]
    assert lab.probe("web", ("udp", "10.99.0.1", 5353), ("udp", "10.99.0.1", 5354)) == ["web", "other"]
    assert lab.probe("other", ("udp", "10.99.0.4", 5353)) == ["web"]


def test_host_ip_narrows_a_port_to_one_address(lab: Lab) -> None:
    # 9090 is published on 10.99.0.1 only, 8443 on the host's loopback only.
    assert lab.probe(CLIENT, ("tcp", "10.99.0.1", 9090), ("tcp", "10.99.0.4", 9090),
                     ("tcp", "10.99.0.1", 8443)) == ["web", FAILED, FAILED]
    assert lab.probe(HOST, ("tcp", "10.99.0.1", 9090), ("tcp", "10.99.0.4", 9090),
                     ("tcp", "127.0.0.1", 9090), ("tcp", "127.0.0.1", 8443),
                     ("tcp", "10.99.0.1", 8443)) == ["web", FAILED, FAILED, "web", FAILED]
    assert lab.probe("api", ("tcp", "10.99.0.1", 9090), ("tcp", "10.99.0.4", 9090)) == ["web", FAILED]


def test_internal_networks_have_no_way_out_and_networks_are_isolated(lab: Lab) -> None:
    # Controls first: a non-internal network gets out, masqueraded, and reaches its neighbours.
    assert lab.probe("web", ("tcp", "10.99.0.2", 7000), ("tcp", "10.90.1.11", 80), ("tcp", "10.90.2.10", 80),
                     ("tcp", "10.90.3.10", 80)) == ["10.99.0.1", "api", FAILED, FAILED]
    assert lab.probe("other", ("tcp", "10.99.0.2", 7000), ("tcp", "10.90.1.10", 80)) == ["10.99.0.1", FAILED]
    # The internal network: no way out, not even to a published port through its gateway, and
    # not even for a container that routes around the missing default route.
    lab.sandbox.run("ip", "-n", VAULT_NETNS, "route", "add", "default", "via", "10.90.3.1")
    try:
        assert lab.probe("vault", ("tcp", "10.99.0.2", 7000), ("tcp", "10.90.3.1", 8080),
                         ("tcp", "10.99.0.1", 8080), ("tcp", "10.90.1.10", 80),
                         ("udp", "10.90.3.1", 5353)) == [FAILED] * 5
    finally:
        lab.sandbox.run("ip", "-n", VAULT_NETNS, "route", "del", "default")
    assert lab.probe(CLIENT, ("tcp", "10.90.3.10", 80)) == [FAILED]


def _rule(comment: str, spec: str) -> str:
    return spec.replace("COMMENT", f'-m comment --comment "reconcile/v1 {comment}"')


def _nft(comment: str, spec: str) -> str:
    return f'{spec} comment "reconcile/v1 {comment}"'


RULES = {  # the same rules as each backend prints them
    IPTABLES: {
        "dnat 8080": _rule("port pub/web/8080/tcp",
                           "-p tcp -m tcp --dport 8080 COMMENT -j DNAT --to-destination 10.90.1.10:80"),
        "accept dnat": _rule("network pub/front", "-o rc-pub-front -m conntrack --ctstate DNAT COMMENT -j ACCEPT"),
        "snat loopback": _rule("network pub/front", "-s 127.0.0.0/8 -o rc-pub-front COMMENT -j MASQUERADE"),
        "prerouting hook": _rule("chains", "-m addrtype --dst-type LOCAL COMMENT -j RECONCILE-DNAT"),
        "forward hook": _rule("chains", "COMMENT -j RECONCILE-FORWARD"),
    },
    NFTABLES: {
        "dnat 8080": _nft("port pub/web/8080/tcp", "tcp dport 8080 dnat ip to 10.90.1.10:80"),
        "accept dnat": _nft("network pub/front", 'oifname "rc-pub-front" ct status dnat accept'),
        "snat loopback": _nft("network pub/front", 'ip saddr 127.0.0.0/8 oifname "rc-pub-front" masquerade'),
        "prerouting hook": _nft("chains", "fib daddr type local jump RECONCILE-DNAT"),
        "forward hook": _nft("chains", "jump RECONCILE-FORWARD"),
    },
}

Probe = tuple[str, tuple[str, str, int], str, str]
"""A probe a drift breaks: vantage point, probe, the answer while drifted, the answer repaired."""
TO_8080 = (CLIENT, ("tcp", "10.99.0.1", 8080), FAILED, "web")


def drifts(backend: str) -> list[tuple[str, str, str | None, list[str], Probe | None]]:
    """(rule to delete or chain to flush: "delete"/"flush", chain, rule, lines `diff` must
    print, a probe the drift breaks or None)."""
    rules = RULES[backend]
    on_iptables = backend == IPTABLES
    return [
        ("delete", "RECONCILE-DNAT", rules["dnat 8080"],
         ["  + port pub/web/8080/tcp (not on the host)", f"      nat: -A RECONCILE-DNAT {rules['dnat 8080']}",
          "Plan: 1 to add, 0 to change, 0 to destroy."], TO_8080),
        ("flush", "RECONCILE-ACCEPT", None,
         ["  ~ firewall pub/front (in place: differs from the spec)",
          f"      filter: (none) → -A RECONCILE-ACCEPT {rules['accept dnat']}",
          "  ~ firewall pub/side (in place: differs from the spec)",
          "  ~ firewall pub/back (in place: differs from the spec)",
          "Plan: 0 to add, 3 to change, 0 to destroy."],
         # iptables: FORWARD's DROP policy takes over; nftables: the admin's accepts stand in
         TO_8080 if on_iptables else None),
        ("flush", "RECONCILE-SNAT", None,
         ["  ~ firewall pub/front (in place: differs from the spec)",
          f"      nat: (none) → -A RECONCILE-SNAT {rules['snat loopback']}",
          "  ~ firewall pub/side (in place: differs from the spec)",
          "Plan: 0 to add, 2 to change, 0 to destroy."],
         (HOST, ("tcp", "127.0.0.1", 8080), FAILED, "web")),  # 127.0.0.1 cannot leave unmasqueraded
        ("delete", "PREROUTING", rules["prerouting hook"],
         ["  ~ firewall chains (in place: differs from the layout)",
          f"      nat: (none) → -A PREROUTING {rules['prerouting hook']}",
          "Plan: 0 to add, 1 to change, 0 to destroy."], TO_8080),
        ("delete", "FORWARD", rules["forward hook"],
         ["  ~ firewall chains (in place: differs from the layout)",
          f"      filter: (none) → -A FORWARD {rules['forward hook']}",
          "Plan: 0 to add, 1 to change, 0 to destroy."],
         # iptables: FORWARD's DROP policy takes over; nftables: networks are no longer isolated
         TO_8080 if on_iptables else ("web", ("tcp", "10.90.2.10", 80), "other", FAILED)),
    ]


def test_drift_is_named_by_diff_and_repaired_by_apply(own_lab: Lab) -> None:
    lab = own_lab
    assert lab.apply() == "No changes. The host matches the spec.\n"
    assert lab.diff() == (0, "No changes. The host matches the spec.\n")
    pids = lab.pids()
    for verb, chain, spec, expected, broken in drifts(lab.backend):
        drift = (verb, chain, spec)
        if spec is None:
            flush_chain(lab.sandbox, lab.backend, chain)
        else:
            delete_rule(lab.sandbox, lab.backend, chain, spec)
        if broken:
            assert lab.probe(broken[0], broken[1]) == [broken[2]], drift
        code, out = lab.diff()
        assert code == 2 and set(expected) <= set(out.splitlines()), (drift, out)
        lab.apply()
        assert lab.diff()[0] == 0, drift
        if broken:
            assert lab.probe(broken[0], broken[1]) == [broken[3]], drift
        lab.assert_canary_intact()
    assert lab.pids() == pids  # rules are repaired under running containers
    if lab.backend == NFTABLES:  # nothing foreign can jump into our table: down leaves nothing
        assert lab.sandbox.reconcile("down", lab.path).returncode == 0
        assert our_rules(lab.sandbox, lab.backend) == []
        assert lab.sandbox.netns_names() == [CLIENT] and lab.sandbox.our_links() == []
        lab.assert_canary_intact()
        return

    # An admin's rule jumping into one of our chains: `down` removes everything else, keeps
    # that chain (emptied) and names the rule; once the admin deletes it, nothing of ours is left.
    lab.sandbox.run("iptables", "-A", "INPUT", "-j", "RECONCILE-INPUT")
    result = lab.sandbox.reconcile("down", lab.path)
    assert (result.returncode, result.stderr) == (1, (
        "error: chain filter RECONCILE-INPUT was emptied but not deleted: the filter rule "
        "`-A INPUT -j RECONCILE-INPUT` jumps to it and is not reconcile's to delete; "
        "delete it and run again\n"))
    assert our_rules(lab.sandbox, lab.backend) == [":RECONCILE-INPUT - [0:0]"]
    assert lab.sandbox.netns_names() == [CLIENT] and lab.sandbox.our_links() == []
    lab.sandbox.run("iptables", "-D", "INPUT", "-j", "RECONCILE-INPUT")
    assert lab.sandbox.reconcile("down", lab.path).returncode == 0
    assert our_rules(lab.sandbox, lab.backend) == []
    lab.assert_canary_intact()


def test_a_changed_udp_mapping_takes_effect_at_once_and_down_leaves_nothing(own_lab: Lab) -> None:
    lab = own_lab
    # Two UDP flows from the other machine: one to a published port, one to a port published
    # only below; each leaves a conntrack entry that outlives a rule change unless flushed.
    flows = [("udp", "10.99.0.1", 5353, 40001), ("udp", "10.99.0.1", 5355, 40002)]
    assert lab.probe(CLIENT, *flows) == ["web", FAILED]
    pids = lab.pids()
    moved = {**PORTS, "web": [p for p in PORTS["web"] if p != "5353:53/udp"] + ["5355:53/udp"],
             "api": [*PORTS["api"], "5353:53/udp"]}
    lab.sandbox.write("stack.yaml", stack_text(moved))
    code, out = lab.diff()
    assert code == 2 and {"  - port pub/web/5353/udp (no longer in the spec)",
                          "  + port pub/api/5353/udp (not on the host)",
                          "  + port pub/web/5355/udp (not on the host)"} <= set(out.splitlines()), out
    lab.apply()
    assert lab.probe(CLIENT, *flows) == ["api", "web"]  # the same flows, the new targets, at once
    assert lab.pids() == pids  # ports change in place

    assert lab.sandbox.reconcile("down", lab.path).returncode == 0
    for saved in (lab.sandbox.run("iptables-save").stdout, lab.sandbox.run("nft", "list", "ruleset").stdout):
        assert "reconcile" not in saved.lower(), saved
    assert our_rules(lab.sandbox, lab.backend) == []
    lab.assert_canary_intact()
    assert lab.probe(CLIENT, ("tcp", "10.99.0.1", 8080), flows[0]) == [FAILED, FAILED]
    assert lab.sandbox.netns_names() == [CLIENT] and lab.sandbox.our_links() == []
