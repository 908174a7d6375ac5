"""Flushing conntrack entries that a changed NAT rule would otherwise keep alive.

NAT is decided once per flow, at its first packet; the conntrack entry then carries the
translation. So after a published port changes or goes away, established flows keep going to
the old target, and a UDP client that talked to the port before it was published keeps an
un-NATed entry (UDP "connections" live as long as packets keep coming). Deleting the entries
makes the next packet take the rules as they are now (kube-proxy does the same for UDP).

Only flows addressed to this host are deleted: a container's own outbound flow to some server's
port 443 must survive the removal of a published 443. Uses `conntrack` from conntrack-tools:
one `conntrack -L -f <family>` per family asked for, then one `conntrack -D` per (port, host
address) that has flows, so a batch of a thousand port changes on an idle host costs one
process per family, not a thousand.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from kernel.netfilter import Family, NetfilterError, Runner

_NOTHING_DELETED = "0 flow entries have been deleted"


@dataclass(frozen=True)
class Flow:
    """A conntrack entry's original direction: protocol, destination address and port."""

    protocol: str
    destination: IPv4Address | IPv6Address
    dport: int


@dataclass(frozen=True)
class FlowFilter:
    """Flows of one family to this port of the host (on this address only, if given)."""

    protocol: str  # "tcp" | "udp"
    port: int
    destination: IPv4Address | None = None
    family: Family = Family.IPV4

    def matches(self, flow: Flow, local: Sequence[IPv4Network | IPv6Network]) -> bool:
        if flow.protocol != self.protocol or flow.dport != self.port:
            return False
        if self.destination is not None:
            return flow.destination == self.destination
        return any(flow.destination in network for network in local)


def parse_flows(text: str) -> list[Flow]:
    """`conntrack -L` lines: the first dst=/dport= pair is the original direction."""
    flows = []
    for line in text.splitlines():
        words = line.split()
        values = dict(w.split("=", 1) for w in reversed(words) if "=" in w)
        if words and "dst" in values and "dport" in values:
            flows.append(Flow(words[0], ip_address(values["dst"]), int(values["dport"])))
    return flows


def _local_networks(run: Runner, family: Family) -> list[IPv4Network | IPv6Network]:
    """This host's addresses of a family, as the kernel's local routing table holds them
    (127.0.0.0/8 is one entry: every loopback address is local)."""
    proc = run(["ip", f"-{family.value}", "-j", "route", "show", "table", "local", "type", "local"],
               capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetfilterError(f"ip route show table local failed: {proc.stderr.strip()}")
    return [ip_network(route["dst"]) for route in json.loads(proc.stdout or "[]")]


def _run(run: Runner, argv: list[str], tolerated: str = "") -> subprocess.CompletedProcess[str]:
    proc = run(argv, capture_output=True, text=True)
    if proc.returncode != 0 and not (tolerated and tolerated in proc.stderr):
        raise NetfilterError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


def flush(filters: Sequence[FlowFilter], run: Runner = subprocess.run) -> None:
    """Delete every flow to this host matched by any filter; no match is fine."""
    for family in dict.fromkeys(f.family for f in filters):
        _flush_family(family, [f for f in filters if f.family is family], run)


def _flush_family(family: Family, filters: Sequence[FlowFilter], run: Runner) -> None:
    name = f"ipv{family.value}"
    flows = parse_flows(_run(run, ["conntrack", "-L", "-f", name]).stdout)
    wanted = {(f.protocol, f.port) for f in filters}
    candidates = [flow for flow in flows if (flow.protocol, flow.dport) in wanted]
    if not candidates:
        return
    local = _local_networks(run, family)
    targets = dict.fromkeys((f.protocol, f.port, flow.destination)
                            for f in filters for flow in candidates if f.matches(flow, local))
    for protocol, port, destination in targets:
        # A flow may end between the listing and here: "0 flow entries" is no error.
        _run(run, ["conntrack", "-D", "-f", name, "-p", protocol, "--orig-port-dst", str(port),
                   "--orig-dst", str(destination)], tolerated=_NOTHING_DELETED)
