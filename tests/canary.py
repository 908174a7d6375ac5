"""A foreign canary set planted in a Sandbox: things another tool (Docker, an admin) owns, which
reconcile must never touch whatever happens to it (a kill, a bad spec, a race). A test takes
`snapshot()` before a scenario and asserts it byte-identical afterwards.

The set: Docker-like `DOCKER` chains in nat and filter with their jumps from PREROUTING and
FORWARD, an admin ssh rule in INPUT and FORWARD's DROP policy (as Docker sets it); a foreign
nftables `inet` table (firewalld's kind: base chains at our hooks, a set, rules with comments)
beside the nftables backend's; a foreign
bridge `br-canary` with an address and a veth pair `cv0`/`cv1` with `cv0` on the bridge; a
foreign netns `canary-ns` with a link of its own; and a foreign cgroup `<cgroup-parent>-canary`
(a sibling of the sandbox's per-run parent, so a prefix match on our parent would hit it) in the
memory and pids hierarchies (the unified tree on v2), with limits written.

Use `planted(sandbox)` (a context manager that always removes the cgroups, which outlive the
sandbox's namespaces) or `Canary(sandbox)` + `remove()` in a fixture."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from specs.names import parse_netns_name
from tests.cgroupfs import limit_file
from tests.firewall_canaries import CANARY as DOCKER_RULES
from tests.firewall_support import foreign_nft, foreign_rules
from tests.sandbox import Sandbox, purge_cgroup

BRIDGE = "br-canary"
VETH = ("cv0", "cv1")
NETNS = "canary-ns"
CGROUP_LIMITS = {"memory": "50331648", "pids": "17"}
"""Limits nobody would pick by default, so a reset to the default shows."""
NFT_TABLE = "inet rc-canary"
_PLANT_NFT = f"""
table {NFT_TABLE} {{
	set admins {{ type ipv4_addr; elements = {{ 10.250.0.7, 10.250.0.8 }} }}
	chain forward {{
		type filter hook forward priority filter + 5; policy accept;
		ip saddr @admins tcp dport 22 accept comment "admin ssh"
		tcp dport 23 drop
	}}
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		iifname "br-canary" tcp dport 2222 dnat ip to 10.250.0.9:22
	}}
}}
"""
"""A foreign table at the same hooks as ours (dstnat, forward): it must stay byte-identical
whatever the nftables backend does to its own table."""
_IPTABLES_NFT_TABLES = ("ip nat", "ip filter", "ip mangle", "ip raw", "ip security",
                        "ip6 nat", "ip6 filter", "ip6 mangle", "ip6 raw", "ip6 security")
"""iptables-nft's tables: compared as iptables-save text (foreign_rules), our chains left out."""

_PLANT_LINKS = f"""
set -e
ip link add {BRIDGE} type bridge
ip link set {BRIDGE} addrgenmode none  # no IPv6 link-local: its DAD state would tick
ip addr add 10.250.0.1/24 dev {BRIDGE}
ip link set {BRIDGE} up
ip link add {VETH[0]} type veth peer name {VETH[1]}
ip link set {VETH[0]} master {BRIDGE}
ip netns add {NETNS}
ip -n {NETNS} link add cns0 type veth peer name cns1  # a veth: no bridge timers ticking
ip -n {NETNS} addr add 10.250.1.1/24 dev cns0
"""


class Canary:
    """The canary set, planted at construction."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.knobs = {limit_file(f"{sandbox.cgroup_parent}-canary", field): value
                      for field, value in CGROUP_LIMITS.items()}
        self.cgroups = list(dict.fromkeys(knob.parent for knob in self.knobs))  # one on v2
        try:
            sandbox.sh(_PLANT_LINKS)
            sandbox.run("iptables-restore", "--noflush", input=DOCKER_RULES)
            sandbox.run("nft", "-f", "-", input=_PLANT_NFT)
            for cgroup in self.cgroups:
                cgroup.mkdir()
            for knob, value in self.knobs.items():
                knob.write_text(value)
        except BaseException:
            self.remove()  # half a canary must not outlive the test either
            raise

    def snapshot(self) -> str:
        """Everything foreign, byte-comparable: links (sandbox.snapshot, timers and counters
        left out), iptables-save without our lines and counters, every nftables table but ours and
        iptables-nft's (counters left out), the foreign netns names and the
        link inside one, the canary cgroups' knobs, members and children."""
        sandbox = self.sandbox
        netns = [n for n in sandbox.netns_names() if parse_netns_name(n) is None]
        return json.dumps({
            "links": sandbox.snapshot(BRIDGE, *VETH),
            "netns_links": sandbox.links(NETNS) if NETNS in netns else None,
            "rules": foreign_rules(sandbox),
            "nft": {name: text for name, text in foreign_nft(sandbox).items() if name not in _IPTABLES_NFT_TABLES},
            "netns": netns,
            "cgroups": {str(c): self._cgroup_state(c) for c in self.cgroups},
        }, indent=1, sort_keys=True)

    def remove(self) -> None:
        """Remove the cgroups (they live on the host's cgroupfs, past the sandbox); links, netns
        and rules go with the sandbox's namespaces, or here if it is still alive
        (a sandbox reused after the canary)."""
        for cgroup in self.cgroups:
            if cgroup.is_dir():
                purge_cgroup(cgroup)
        self.sandbox.sh(f"ip netns del {NETNS}; ip link del {BRIDGE}; ip link del {VETH[0]}",
                        check=False)

    def _cgroup_state(self, cgroup: Path) -> dict[str, str | list[str]]:
        knobs = {knob.name: knob.read_text() for knob in self.knobs if knob.parent == cgroup}
        return {**knobs, "cgroup.procs": (cgroup / "cgroup.procs").read_text(),
                "children": sorted(p.name for p in cgroup.iterdir() if p.is_dir())}


@contextmanager
def planted(sandbox: Sandbox) -> Iterator[Canary]:
    """A canary for the length of a block; its cgroups are removed even if the block fails."""
    canary = Canary(sandbox)
    try:
        yield canary
    finally:
        canary.remove()
