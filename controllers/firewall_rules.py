"""The rules reconcile owns, as pure functions of the spec: the rules of each owner (the fixed
skeleton, one network, one published port) and the owners read back from rule comments. The
chain names and the comment format are kernel-visible marks, in specs.names with the others.

DO NOT RENAME the base chains or change the key formats: hosts in the field carry them, and a
fresh process recognises its rules only by these names and marks.

Every rule carries `-m comment --comment "reconcile/v1 <kind>[ <key>]"` naming its owner:
`reconcile/v1 chains` (the skeleton below), `reconcile/v1 network <stack>/<network>`,
`reconcile/v1 port <stack>/<container>/[<host_ip>:]<host_port>/<tcp|udp>`.

Layout (hooks are inserted at the top of their built-in chain when missing; we do not fight
for first place afterwards, so a Docker restart inserting its own jumps above ours is left be):

    nat     PREROUTING  -m addrtype --dst-type LOCAL -j RECONCILE-DNAT   (other machines, containers)
            OUTPUT      -m addrtype --dst-type LOCAL -j RECONCILE-DNAT   (the host, 127.0.0.1 included)
            POSTROUTING -j RECONCILE-SNAT
    filter  INPUT       -j RECONCILE-INPUT                               (loopback guard per bridge)
            FORWARD     -j RECONCILE-FORWARD                             (works under a DROP policy)
    RECONCILE-FORWARD:  -j RECONCILE-INTERNAL; ! DNAT -j RECONCILE-ISOLATE-FROM; -j RECONCILE-ACCEPT

Address families: a rule with an address (masquerade of a subnet, a DNAT, the loopback guard)
is of that address's family; one without (hooks, RECONCILE-FORWARD, isolation, internal drops,
accepts) applies to IPv4 and IPv6 alike, so an internal network drops both and isolation holds
for both. A dual-stack network (subnet6) adds the IPv6 hairpin masquerade and, with ipv6_nat,
the IPv6 masquerade of subnet6 on its way out (without it, IPv6 is routed: the containers'
addresses are seen as they are). A published port of a container with an IPv6 address on its
default_route network DNATs IPv6 too, from every local IPv6 address (its owner then has two
rules), unless an IPv4 host_ip narrows it to that address. The loopback rules stay IPv4 only:
IPv6 has no route_localnet, the kernel never routes a ::1 source off the host, so a port
cannot answer on [::1] through NAT: [::1] is left out of the IPv6 DNAT (IPV6_LOOPBACK) and
served by a userland proxy instead (controllers.proxy).

The iptables backend holds IPv6 rules in ip6tables' nat and filter tables, with the same
chains and skeleton as iptables' (a rule for both families is placed in both); see
kernel.netfilter.

The nftables backend keeps the same chains and rules in one `inet` table of its own
(NFT_TABLE), where the hooks are base chains of ours named like the built-in chains they stand
for (BASE_CHAINS: the same hooks and priorities as iptables' nat and filter tables), so the
skeleton's hook rules are the same `Rule`s in both backends.

Within every chain but RECONCILE-FORWARD all rules share one verdict (all DNAT to distinct
ports, all MASQUERADE, all DROP, all ACCEPT, or all the same jump), so their order never
matters: rules of one owner can be added or deleted without rewriting anyone else's, and owners
outside the run's scope are never touched. Only the skeleton (hooks, RECONCILE-FORWARD) is
ordered, and RECONCILE-FORWARD is rewritten whole when it differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING

from kernel.netfilter import BaseChain, Iface, Rule
from kernel.netfilter_nft import NftLayout
from specs import names
from specs.names import (
    CHAIN_ACCEPT,
    CHAIN_DNAT,
    CHAIN_FORWARD,
    CHAIN_INPUT,
    CHAIN_INTERNAL,
    CHAIN_ISOLATE_FROM,
    CHAIN_ISOLATE_TO,
    CHAIN_SNAT,
    FILTER,
    NAT,
    NFT_TABLE,
    OUR_CHAINS,
)

if TYPE_CHECKING:
    from specs.model import Network, PortMapping

BASE_CHAINS: tuple[BaseChain, ...] = (
    BaseChain(NAT, "PREROUTING", "nat", "prerouting", "dstnat"),
    BaseChain(NAT, "OUTPUT", "nat", "output", "-100"),
    BaseChain(NAT, "POSTROUTING", "nat", "postrouting", "srcnat"),
    BaseChain(FILTER, "INPUT", "filter", "input", "filter"),
    BaseChain(FILTER, "FORWARD", "filter", "forward", "filter"),
)
"""The nftables backend's hook chains in NFT_TABLE: DO NOT RENAME. Priorities are those of
iptables' nat (dstnat -100, srcnat 100) and filter (0) tables. A packet must be accepted by
every base chain at its hook, whatever table holds it: our accept is not final, a foreign drop
is (see docs/spec.md on a foreign FORWARD policy of DROP). `dstnat` is not accepted for the
output hook by nft 1.0.6, hence the number."""

NFT_LAYOUT = NftLayout(NFT_TABLE, BASE_CHAINS, {chain: table for table, chain in OUR_CHAINS})

LOOPBACK = IPv4Network("127.0.0.0/8")
IPV6_LOOPBACK = IPv6Network("::1/128")
"""Left out of the IPv6 DNAT, as Docker's ip6tables hook leaves it: a ::1 flow DNATed to a
container could never come back (the kernel drops a reply to ::1 arriving on the bridge); the
port's proxy serves [::1] (controllers.proxy)."""

PARSED_CACHE = 8192
"""Comments and port keys parsed back, remembered (both are pure functions of the text): every
pass reads the same comments again, a thousand published ports' worth, and the watch agent
makes many passes an hour; a host's worth fits."""
_PORT_KEY_RE = re.compile(
    r"^(?P<stack>[a-z][a-z0-9-]*)/(?P<container>[a-z][a-z0-9-]*)/"
    r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+):)?(?P<port>\d+)/(?P<protocol>tcp|udp)$")
_NETWORK_KEY_RE = re.compile(r"^[a-z][a-z0-9-]*/[a-z][a-z0-9-]*$")
_COMMENT_IN_SPEC = re.compile(r'(?:-m comment --comment|(?:^| )comment) (?:"(?P<quoted>[^"]*)"|(?P<bare>\S+))')
"""The comment of a rule as iptables-save (`-m comment --comment X`) or nft (`comment "X"`)
prints it."""


@dataclass(frozen=True, slots=True)
class PortKey:
    """One published port's identity: the host side (a change of the container side updates
    the same owner in place)."""

    stack: str
    container: str
    host_ip: IPv4Address | None
    host: int
    protocol: str

    @property
    def key(self) -> str:
        where = f"{self.host_ip}:{self.host}" if self.host_ip else str(self.host)
        return f"{self.stack}/{self.container}/{where}/{self.protocol}"

    def overlaps(self, other: PortKey) -> bool:
        """Both would DNAT some packet: same protocol and port, and an address in common."""
        return (self.protocol == other.protocol and self.host == other.host
                and (self.host_ip is None or other.host_ip is None or self.host_ip == other.host_ip))

    @staticmethod
    @lru_cache(maxsize=PARSED_CACHE)
    def parse(key: str) -> PortKey | None:
        match = _PORT_KEY_RE.match(key)
        if not match:
            return None
        try:
            ip = IPv4Address(match["ip"]) if match["ip"] else None
        except ValueError:  # `999.0.0.1`, `127.0.0.01`: not one of ours (anyone may write a comment)
            return None
        return PortKey(match["stack"], match["container"], ip, int(match["port"]), match["protocol"])


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a rule belongs to, read back from its comment."""

    kind: str  # "chains" (the skeleton), "network" or "port"
    key: str  # "" for the skeleton, "<stack>/<network>", or PortKey.key

    @property
    def stack(self) -> str | None:
        return self.key.split("/", 1)[0] if self.key else None

    @property
    def comment(self) -> str:
        return names.rule_comment(self.kind, self.key)


SKELETON = Owner("chains", "")


@lru_cache(maxsize=PARSED_CACHE)
def parse_comment(comment: str) -> Owner | None:
    """The owner a comment names, or None for a comment that is not one of ours."""
    parsed = names.parse_rule_comment(comment)
    if parsed is None:
        return None
    kind, key = parsed
    valid = {"chains": key == "", "network": bool(_NETWORK_KEY_RE.match(key)),
             "port": PortKey.parse(key) is not None}[kind]
    return Owner(kind, key) if valid else None


@lru_cache(maxsize=PARSED_CACHE)
def owner_of_spec(spec: str) -> Owner | None:
    """The owner of a rule as the backend printed it (its comment match), if it is ours; every
    read of a changed ruleset looks for the comment in each of its rules again."""
    match = _COMMENT_IN_SPEC.search(spec)
    if not match:
        return None
    return parse_comment(match["quoted"] if match["quoted"] is not None else match["bare"])


def network_owner(stack: str, network: str) -> Owner:
    return Owner("network", f"{stack}/{network}")


def port_owner(port: PortKey) -> Owner:
    return Owner("port", port.key)


def skeleton_rules() -> list[Rule]:
    """Hooks from the built-in chains, and RECONCILE-FORWARD in its fixed order: internal
    networks' drops first (nothing may leave them, not even a reply), isolation between our
    bridges next (except DNATed flows: a published port is reachable from every network, as
    from any other machine), then our accepts."""
    c = SKELETON.comment
    return [
        Rule(NAT, "PREROUTING", CHAIN_DNAT, c, dst_local=True),
        Rule(NAT, "OUTPUT", CHAIN_DNAT, c, dst_local=True),
        Rule(NAT, "POSTROUTING", CHAIN_SNAT, c),
        Rule(FILTER, "INPUT", CHAIN_INPUT, c),
        Rule(FILTER, "FORWARD", CHAIN_FORWARD, c),
        Rule(FILTER, CHAIN_FORWARD, CHAIN_INTERNAL, c),
        Rule(FILTER, CHAIN_FORWARD, CHAIN_ISOLATE_FROM, c, ctstate=("DNAT",), ctstate_negated=True),
        Rule(FILTER, CHAIN_FORWARD, CHAIN_ACCEPT, c),
    ]


def network_rules(stack: str, key: str, network: Network) -> list[Rule]:
    """An internal network may only talk within its bridge. Any other one is masqueraded on its
    way out, isolated from our other bridges, hairpins DNATed flows back to itself, and takes
    published ports DNATed to 127.0.0.1 from the host (route_localnet + masquerade of the
    loopback source); since route_localnet would also let a container reach the host's
    127.0.0.1 services, new flows from the bridge to 127.0.0.0/8 are dropped (kubelet's fix
    for CVE-2020-8558). Traffic within one bridge is accepted too: with br_netfilter (built
    into our kernels, bridge-nf-call-iptables=1) bridged frames cross FORWARD as well.
    IPv6 of a dual-stack network: see the module docstring."""
    comment = network_owner(stack, key).comment
    bridge, subnet = Iface(network.bridge), network.subnet
    not_bridge = Iface(network.bridge, negated=True)
    if network.internal:
        return [
            Rule(FILTER, CHAIN_INTERNAL, "DROP", comment, in_iface=bridge, out_iface=not_bridge),
            Rule(FILTER, CHAIN_INTERNAL, "DROP", comment, in_iface=not_bridge, out_iface=bridge),
            Rule(FILTER, CHAIN_ACCEPT, "ACCEPT", comment, in_iface=bridge, out_iface=bridge),
        ]
    subnets = [subnet, *([network.subnet6] if network.subnet6 else [])]
    nat_out = [subnet, *([network.subnet6] if network.subnet6 and network.ipv6_nat else [])]
    return [
        *(Rule(NAT, CHAIN_SNAT, "MASQUERADE", comment, source=s, out_iface=not_bridge) for s in nat_out),
        *(Rule(NAT, CHAIN_SNAT, "MASQUERADE", comment, source=s, out_iface=bridge, ctstate=("DNAT",))
          for s in subnets),
        Rule(NAT, CHAIN_SNAT, "MASQUERADE", comment, source=LOOPBACK, out_iface=bridge),
        Rule(FILTER, CHAIN_INPUT, "DROP", comment, destination=LOOPBACK, in_iface=bridge,
             ctstate=("RELATED", "ESTABLISHED", "DNAT"), ctstate_negated=True),
        Rule(FILTER, CHAIN_ISOLATE_FROM, CHAIN_ISOLATE_TO, comment, in_iface=bridge,
             out_iface=not_bridge),
        Rule(FILTER, CHAIN_ISOLATE_TO, "DROP", comment, out_iface=bridge),
        Rule(FILTER, CHAIN_ACCEPT, "ACCEPT", comment, out_iface=bridge,
             ctstate=("RELATED", "ESTABLISHED")),
        Rule(FILTER, CHAIN_ACCEPT, "ACCEPT", comment, out_iface=bridge, ctstate=("DNAT",)),
        Rule(FILTER, CHAIN_ACCEPT, "ACCEPT", comment, in_iface=bridge),
    ]


def port_key(stack: str, container: str, mapping: PortMapping) -> PortKey:
    """(The model already turns host_ip 0.0.0.0 into None: both mean every address.)"""
    return PortKey(stack, container, mapping.host_ip, mapping.host, mapping.protocol)


def port_rules(port: PortKey, target: IPv4Address, target6: IPv6Address | None,
               container_port: int) -> list[Rule]:
    """DNAT from any local address (or host_ip alone) to the container, from PREROUTING (other
    machines, other containers) and OUTPUT (the host itself, 127.0.0.1 included); the same
    over IPv6 to `target6` (the container's IPv6 address, if it has one) unless host_ip, an
    IPv4 address, narrows the port to IPv4."""
    destination = IPv4Network(port.host_ip) if port.host_ip else None
    comment = port_owner(port).comment
    rules = [Rule(NAT, CHAIN_DNAT, "DNAT", comment, destination=destination, protocol=port.protocol,
                  dport=port.host, to_destination=(target, container_port))]
    if target6 is not None and port.host_ip is None:
        rules.append(Rule(NAT, CHAIN_DNAT, "DNAT", comment, destination=IPV6_LOOPBACK, destination_negated=True,
                          protocol=port.protocol, dport=port.host, to_destination=(target6, container_port)))
    return rules
