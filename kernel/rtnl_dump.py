"""One rtnetlink dump of a namespace's links, IPv4 and IPv6 addresses and main-table routes,
parsed straight from the socket into our records.

IPv6 link-local addresses and routes (fe80::/10, made by the kernel on every link that comes
up) and multicast routes are left out: nothing of ours declares them, and keeping them would
show every link as holding an address of its own making. Callers that only speak IPv4 filter
on `.version`; mixed families are never sorted together (IPv4 and IPv6 objects do not compare).

A namespace costs ~0.4 ms (pyroute2's decoder took ~11 ms), which matters at 200 sandboxes
per pass: see kernel/rtnl_wire.py.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
    ip_address,
)

from kernel import rtnl_wire as wire

IFF_UP = 0x1
AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
RT_TABLE_MAIN = 254
RT_TABLE_COMPAT = 252
"""What a route message says of a table whose id does not fit its one byte (RTA_TABLE has it)."""
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 3, 4, 10, 18, 20
IFLA_AF_SPEC, IFLA_GROUP = 26, 27
IFLA_INET6_CONF = 2  # in IFLA_AF_SPEC's AF_INET6: the link's IPv6 sysctls, an s32 each
DEVCONF_DISABLE_IPV6 = 26  # that array's index of disable_ipv6 (linux/ipv6.h)
IFLA_INFO_KIND, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 4, 5
IFLA_BRPORT_MODE = 4  # hairpin
IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS = 29, 1 << 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
LINK_LOCAL6 = IPv6Network("fe80::/10")
_INTERFACES: dict[int, type[IPv4Interface] | type[IPv6Interface]] = {AF_INET: IPv4Interface, AF_INET6: IPv6Interface}
_NETWORKS: dict[int, type[IPv4Network] | type[IPv6Network]] = {AF_INET: IPv4Network, AF_INET6: IPv6Network}
"""Built straight from the packed bytes of a family the message names (ip_interface and
ip_network try IPv4 then IPv6 from text: most of a dump's parse time)."""

Interface = IPv4Interface | IPv6Interface
Net = IPv4Network | IPv6Network


def family_order(interface: Interface) -> tuple[int, Interface]:
    """Sort key for addresses of both families: IPv4 first, each family in address order."""
    return interface.version, interface


def ipv4_of(addresses: Sequence[Interface]) -> IPv4Interface | None:
    """The first IPv4 address of a link's (the one its MAC and its subnet are read from)."""
    return next((a for a in addresses if isinstance(a, IPv4Interface)), None)


def ipv6_of(addresses: Sequence[Interface]) -> IPv6Interface | None:
    return next((a for a in addresses if isinstance(a, IPv6Interface)), None)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # "bridge", "veth", ... None for links without IFLA_INFO_KIND (lo, eth0)
    alias: str | None
    mtu: int
    up: bool  # the administrative IFF_UP flag, not operstate: a bridge with no port is up but NO-CARRIER
    master: int | None
    group: int
    hairpin: bool | None = None  # bridge ports only: may frames go back out the port they came in
    ipv6: bool | None = None
    """Bridge ports and veths only: whether the link has IPv6 on (its disable_ipv6 is 0); False
    when it has no IPv6 state at all (a host without IPv6, an MTU under IPv6's 1280)."""


@dataclass(frozen=True)
class Address:
    index: int
    interface: Interface


@dataclass(frozen=True)
class Route:
    """A route of the main table (the connected routes of addresses included)."""

    dst: Net
    index: int | None
    gateway: str | None


@dataclass(frozen=True)
class LinkDump:
    links: tuple[Link, ...]
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]

    def addresses_of(self, index: int) -> tuple[Interface, ...]:
        """The link's addresses, IPv4 first (family_order)."""
        return tuple(sorted((a.interface for a in self.addresses if a.index == index), key=family_order))

    def by_name(self) -> dict[str, Link]:
        return {link.name: link for link in self.links}

    def by_index(self) -> dict[int, Link]:
        return {link.index: link for link in self.links}


_LINK_ATTRS = frozenset({IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_AF_SPEC,
                         IFLA_GROUP})
_LINKINFO_ATTRS = frozenset({IFLA_INFO_KIND, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA})
_BRPORT_ATTRS = frozenset({IFLA_BRPORT_MODE})
_INET6_ONLY = frozenset({AF_INET6})
_INET6_CONF = frozenset({IFLA_INET6_CONF})
_ADDRESS_ATTRS = frozenset({IFA_ADDRESS, IFA_LOCAL})
_ROUTE_ATTRS = frozenset({RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE})


def parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = wire.IFINFO.unpack_from(body)
    attrs = wire.attributes(body, wire.IFINFO.size, _LINK_ATTRS)
    info = wire.attributes(attrs.get(IFLA_LINKINFO, b""), 0, _LINKINFO_ATTRS)
    hairpin = ipv6 = None
    kind = wire.text(info.get(IFLA_INFO_KIND))
    port = wire.text(info.get(IFLA_INFO_SLAVE_KIND)) == "bridge"
    if port:
        mode = wire.attributes(info.get(IFLA_INFO_SLAVE_DATA, b""), 0, _BRPORT_ATTRS).get(IFLA_BRPORT_MODE)
        hairpin = bool(mode and mode[0])
    if port or kind == "veth":
        ipv6 = _ipv6_on(attrs.get(IFLA_AF_SPEC, b""))
    return Link(index=index, name=wire.text(attrs.get(IFLA_IFNAME)) or "",
                kind=kind,
                alias=wire.text(attrs.get(IFLA_IFALIAS)) or None, mtu=wire.u32(attrs.get(IFLA_MTU)) or 0,
                up=bool(flags & IFF_UP), master=wire.u32(attrs.get(IFLA_MASTER)),
                group=wire.u32(attrs.get(IFLA_GROUP)) or 0, hairpin=hairpin, ipv6=ipv6)


def _ipv6_on(af_spec: bytes) -> bool:
    """Whether a link's IFLA_AF_SPEC shows IPv6 on, from its IPv6 sysctls. Every link carries
    them; they are read (~1-2 us) only where a caller compares them: bridge ports and veths (a
    host end off its bridge is still one)."""
    inet6 = wire.attributes(af_spec, 0, _INET6_ONLY).get(AF_INET6)
    conf = wire.attributes(inet6, 0, _INET6_CONF).get(IFLA_INET6_CONF) if inet6 else None
    if conf is None or len(conf) < 4 * (DEVCONF_DISABLE_IPV6 + 1):
        return False
    return wire.s32(conf, 4 * DEVCONF_DISABLE_IPV6) == 0


def parse_address(body: bytes) -> Address | None:
    """The address of a RTM_NEWADDR/DELADDR body; None for an IPv6 link-local one."""
    family, prefixlen, _flags, _scope, index = wire.IFADDR.unpack_from(body)
    interface_of = _INTERFACES.get(family)
    if interface_of is None:
        return None
    attrs = wire.attributes(body, wire.IFADDR.size, _ADDRESS_ATTRS)
    packed = attrs.get(IFA_LOCAL) or attrs[IFA_ADDRESS]
    if family == AF_INET6 and packed[0] == 0xFE and packed[1] & 0xC0 == 0x80:  # fe80::/10
        return None
    return Address(index=index, interface=interface_of((packed, prefixlen)))


def parse_route(body: bytes) -> Route | None:
    """The route of a RTM_NEWROUTE/DELROUTE body; None unless it is a main-table route of ours
    to keep (IPv6 link-local and multicast routes are the kernel's own)."""
    family, dst_len, _src_len, _tos, table, _proto, _scope, _type, _flags = wire.RTMSG.unpack_from(body)
    if table not in (RT_TABLE_MAIN, RT_TABLE_COMPAT):  # the local table, most of a dump: not parsed
        return None
    attrs = wire.attributes(body, wire.RTMSG.size, _ROUTE_ATTRS)
    if family not in (AF_INET, AF_INET6) or (wire.u32(attrs.get(RTA_TABLE)) or table) != RT_TABLE_MAIN:
        return None
    dst = _NETWORKS[family]((attrs.get(RTA_DST, 0), dst_len))
    if dst.version == 6 and (dst.is_multicast or dst.network_address in LINK_LOCAL6):
        return None
    gateway = attrs.get(RTA_GATEWAY)
    return Route(dst=dst, index=wire.u32(attrs.get(RTA_OIF)),
                 gateway=None if gateway is None else str(ip_address(gateway)))


TABLES = (
    # Without the counters, which nothing here reads (older kernels ignore the unknown flag).
    (RTM_GETLINK, wire.IFINFO.pack(0, 0, 0, 0, 0) + wire.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)),
    (RTM_GETADDR, wire.IFADDR.pack(AF_UNSPEC, 0, 0, 0, 0)),
    (RTM_GETROUTE, wire.RTMSG.pack(AF_INET, 0, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0)),
    (RTM_GETROUTE, wire.RTMSG.pack(AF_INET6, 0, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0)),
)
"""The dumps of a LinkDump: links, the addresses of both families in one (only IPv4 and IPv6
have addresses to dump), IPv4 then IPv6 routes of the main table (a route dump of AF_UNSPEC
would also bring every other family's: multicast, MPLS). Four round trips per namespace, a
thousand namespaces a pass. Sent under wire.strict_checking, the kernel leaves out the local
table (5 of a sandbox's 8 routes), which parse_route would drop anyway."""


def dump_table(sock: socket.socket, kind: int, body: bytes) -> list[bytes]:
    """One dump, read whole before anything is parsed: the kernel flags a dump interrupted when
    its table changes while it is being read, so the shorter that window, the fewer retries.
    A strict dump of an IPv4 route table the namespace has not made yet (no route ever: `lo`
    down, no address) is refused with ENOENT by some kernels: it holds no route."""
    try:
        return list(wire.dump(sock, kind, body))
    except wire.NetlinkError as exc:
        if kind == RTM_GETROUTE and exc.errno == errno.ENOENT:
            return []
        raise


def parse(tables: Sequence[list[bytes]]) -> LinkDump:
    """A LinkDump from the answers to each of TABLES, in its order."""
    raw: dict[int, list[bytes]] = {RTM_GETLINK: [], RTM_GETADDR: [], RTM_GETROUTE: []}
    for (kind, _body), answers in zip(TABLES, tables):
        raw[kind] += answers
    return LinkDump(links=tuple(parse_link(b) for b in raw[RTM_GETLINK]),
                    addresses=tuple(a for b in raw[RTM_GETADDR] if (a := parse_address(b)) is not None),
                    routes=tuple(r for b in raw[RTM_GETROUTE] if (r := parse_route(b)) is not None))
