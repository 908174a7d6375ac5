"""Kernel change notifications as our own records: rtnetlink link/address/route messages and
nf_tables rule/chain/table messages, parsed straight from the datagrams (see kernel/events.py
for the sockets that receive them).

Measured on iptables 1.8.9 (nf_tables): `-m comment` is NOT stored in the rule's userdata but
kept as an xtables compat expression ("match" named "comment", its info a 256-byte C string),
so both places are read; the kernel sends every rule a flush deletes as its own DELRULE with
the rule's expressions.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from socket import AF_INET6

from kernel import rtnl_wire as wire
from kernel.netlink import AF_UNSPEC, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from kernel.rtnl_dump import IFLA_IFALIAS, IFLA_IFNAME, parse_address, parse_route
from specs.names import VETH_PREFIX

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFTA_GEN_ID = 1
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA = 1, 2, 3, 4, 7
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_MATCH_NAME, NFTA_MATCH_INFO = 1, 3
NFTNL_UDATA_RULE_COMMENT = 0
NFGENMSG_SIZE = 4  # family, version, resource id (big-endian u16)

_UDATA = struct.Struct("=BB")  # type, length


@dataclass(frozen=True)
class LinkEvent:
    """A link, an address or a main-table route (IPv4 or IPv6) changed in one namespace."""

    netns: str | None  # None: the namespace the agent runs in; else its name under /run/netns
    what: str  # "link" | "address" | "route"
    deleted: bool
    ifindex: int  # 0 for a route without an output interface (blackhole, multipath)
    ifname: str | None
    alias: str | None  # the link's IFLA_IFALIAS (our ownership mark), also for a deleted link


@dataclass(frozen=True)
class RuleEvent:
    """A change to an IPv4 or IPv6 nf_tables table, chain or rule (what iptables-nft and
    ip6tables-nft write) or to an inet one (the nftables backend's table). A chain event has comment
    None; a table event has chain None too."""

    table: str
    chain: str | None
    deleted: bool
    comment: str | None  # `-m comment` (compat match) or the rule's userdata comment
    family: int = NFPROTO_IPV4


@dataclass(frozen=True)
class ExitEvent:
    """A watched process ended (or had already ended when it was watched)."""

    pid: int


@dataclass(frozen=True)
class Overflow:
    """The kernel dropped notifications (ENOBUFS): what they were about is unknown, so the
    agent must resync everything this source covers."""

    netns: str | None  # the namespace of a "route" source (None: the agent's own)
    source: str  # "route" | "nftables"


@dataclass(frozen=True)
class NetnsGone:
    """A watched named namespace was deleted (its /run/netns entry removed); its socket is
    closed so the namespace can really go, taking its links with it."""

    netns: str


Event = LinkEvent | RuleEvent | ExitEvent | Overflow | NetnsGone

LinkNames = dict[int, tuple[str | None, str | None]]
"""ifindex -> (ifname, alias) of one namespace's links: lets address and route events, and the
deletion of a link whose message lacks them, name the link's owner."""


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sender port id, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + wire.HEADER.size <= len(data):
        length, kind, _flags, _seq, port = wire.HEADER.unpack_from(data, offset)
        if length < wire.HEADER.size:
            return
        yield kind, port, data[offset + wire.HEADER.size:offset + length]
        offset += (length + 3) & ~3


def remember_link(names: LinkNames, kind: int, body: bytes) -> None:
    """Keep the cache in step with a link message (a dump answer or a notification)."""
    family, _type, index, _flags, _change = wire.IFINFO.unpack_from(body)
    if family != AF_UNSPEC:
        return  # AF_BRIDGE port messages describe bridge state, not the link itself
    if kind == RTM_DELLINK:
        names.pop(index, None)
        return
    attrs = wire.attributes(body, wire.IFINFO.size)
    names[index] = (wire.text(attrs.get(IFLA_IFNAME)), wire.text(attrs.get(IFLA_IFALIAS)) or None)


def route_event(netns: str | None, kind: int, body: bytes, names: LinkNames) -> LinkEvent | None:
    """The event a notification stands for, its link named from the message or the cache (call
    before remember_link, so a deleted link is still known). An AF_BRIDGE DELLINK only means the
    port left its bridge: reported as a change of the link, which still exists."""
    if kind in (RTM_NEWLINK, RTM_DELLINK):
        family, _type, index, _flags, _change = wire.IFINFO.unpack_from(body)
        attrs = wire.attributes(body, wire.IFINFO.size)
        known_name, known_alias = names.get(index, (None, None))
        return LinkEvent(netns, "link", kind == RTM_DELLINK and family == AF_UNSPEC, index,
                         wire.text(attrs.get(IFLA_IFNAME)) or known_name,
                         wire.text(attrs.get(IFLA_IFALIAS)) or known_alias)
    # Only what a dump keeps is news: the kernel's own IPv6 link-local addresses and routes,
    # and its local-table routes, come and go with every link brought up (but for a link-local
    # address new on a host end of ours, which is brought up with IPv6 off: _ipv6_switched_on).
    if kind in (RTM_NEWADDR, RTM_DELADDR):
        address = parse_address(body)
        if address is None:
            return _ipv6_switched_on(netns, kind, body, names)
        what, index = "address", address.index
    elif kind in (RTM_NEWROUTE, RTM_DELROUTE):
        route = parse_route(body)
        if route is None:
            return None
        what, index = "route", route.index or 0
    else:
        return None
    name, alias = names.get(index, (None, None))
    return LinkEvent(netns, what, kind in (RTM_DELADDR, RTM_DELROUTE), index, name, alias)


def _ipv6_switched_on(netns: str | None, kind: int, body: bytes, names: LinkNames) -> LinkEvent | None:
    """An IPv6 link-local address new on a veth host end of ours (the agent's namespace, the
    name's prefix; whose it is, its alias says): its IPv6 was switched on, since such an end is
    brought up with it off. The kernel announces the switch itself on no group; the address it
    then gives the link, it does."""
    family, _prefixlen, _flags, _scope, index = wire.IFADDR.unpack_from(body)
    name, alias = names.get(index, (None, None))
    if kind != RTM_NEWADDR or family != AF_INET6 or netns is not None or not (name or "").startswith(VETH_PREFIX):
        return None
    return LinkEvent(netns, "address", False, index, name, alias)


def rule_event(kind: int, body: bytes) -> RuleEvent | None:
    """The event an nf_tables notification stands for; None for other subsystems, other
    families than IPv4 and IPv6 (iptables-nft's and ip6tables-nft's own) and inet (the
    nftables backend's), and objects neither uses (sets...)."""
    if kind >> 8 != NFNL_SUBSYS_NFTABLES or len(body) < NFGENMSG_SIZE or body[0] not in (
            NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_INET):
        return None
    family, message = body[0], kind & 0xFF
    attrs = wire.attributes(body, NFGENMSG_SIZE)
    if message in (NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE):
        return RuleEvent(wire.text(attrs.get(NFTA_TABLE_NAME)) or "", None, message == NFT_MSG_DELTABLE, None,
                         family)
    if message in (NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN):
        return RuleEvent(wire.text(attrs.get(NFTA_CHAIN_TABLE)) or "", wire.text(attrs.get(NFTA_CHAIN_NAME)),
                         message == NFT_MSG_DELCHAIN, None, family)
    if message in (NFT_MSG_NEWRULE, NFT_MSG_DELRULE):
        return RuleEvent(wire.text(attrs.get(NFTA_RULE_TABLE)) or "", wire.text(attrs.get(NFTA_RULE_CHAIN)),
                         message == NFT_MSG_DELRULE, _comment(attrs), family)
    return None


def _comment(rule: dict[int, bytes]) -> str | None:
    """The userdata comment (nft, newer iptables), else the xtables comment match's text."""
    comment = _userdata_comment(rule.get(NFTA_RULE_USERDATA, b""))
    if comment is not None:
        return comment
    for expression in _list(rule.get(NFTA_RULE_EXPRESSIONS, b"")):
        attrs = wire.attributes(expression)
        if wire.text(attrs.get(NFTA_EXPR_NAME)) != "match":
            continue
        match = wire.attributes(attrs.get(NFTA_EXPR_DATA, b""))
        if wire.text(match.get(NFTA_MATCH_NAME)) == "comment":
            return _c_string(match.get(NFTA_MATCH_INFO, b""))
    return None


def _list(data: bytes) -> Iterator[bytes]:
    """Every element of a nested list attribute (NFTA_LIST_ELEM repeated: attributes() keeps
    only the last of a repeated type)."""
    offset = 0
    while offset + 4 <= len(data):
        length = int.from_bytes(data[offset:offset + 2], "little")
        if length < 4:
            return
        yield data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _userdata_comment(udata: bytes) -> str | None:
    """libnftnl's userdata: (u8 type, u8 length, value) records; the comment is a C string."""
    offset = 0
    while offset + _UDATA.size <= len(udata):
        kind, length = _UDATA.unpack_from(udata, offset)
        value = udata[offset + _UDATA.size:offset + _UDATA.size + length]
        if kind == NFTNL_UDATA_RULE_COMMENT:
            return _c_string(value)
        offset += _UDATA.size + length
    return None


def _c_string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")
