"""Links, addresses and routes of one network namespace, over rtnetlink.

Callers get our own frozen records (kernel/rtnl_dump.py) and typed calls; netlink messages
never leave the kernel adapters. Reads are one dump each per pass (links, addresses, routes);
a dump interrupted by a concurrent change (common while namespaces are being deleted) and
EBUSY/EAGAIN are retried. Each change is one request acknowledged by the kernel.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from ipaddress import ip_address

from kernel import rtnl_dump
from kernel import rtnl_wire as wire
from kernel.retrying import retry_transient
from kernel.rtnl_dump import (
    IFF_UP,
    IFLA_GROUP,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_MTU,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTM_GETADDR,
    RTM_GETLINK,
    Interface,
    Link,
    LinkDump,
    Net,
)

AF_UNSPEC, AF_INET, AF_BRIDGE, AF_INET6 = 0, 2, 7, 10
RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK = 16, 17, 19
RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = 20, 21, 24, 25
IFLA_ADDRESS, IFLA_PROTINFO, IFLA_NET_NS_FD = 1, 12, 28
IFLA_INFO_DATA, VETH_INFO_PEER = 2, 1
IFLA_BRPORT_MODE = 4
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD = 0x02
RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE, RTN_UNICAST = 3, 0, 255, 1
_CREATE = wire.NLM_F_CREATE | wire.NLM_F_EXCL
MANY_NAMES = 50


def _transient(exc: BaseException) -> bool:
    """Interrupted dumps and EBUSY/EAGAIN are races with other actors; worth another try."""
    if isinstance(exc, wire.DumpInterrupted):
        return True
    return isinstance(exc, wire.NetlinkError) and exc.errno in (errno.EBUSY, errno.EAGAIN, errno.EINTR)


_retry_transient = retry_transient(_transient, within=2.0, first_wait=0.005, max_wait=0.05)
"""Bounded by time, not attempts: while links come and go (containers starting on a busy
host), most dumps of a few hundred links are interrupted, and five tries in a row failed often
enough to break a run (tests/test_transient_errors.py). Short waits, since a dump only needs
one quiet moment as long as itself."""


def _ifinfo(index: int = 0, *, family: int = AF_UNSPEC, flags: int = 0, change: int = 0) -> bytes:
    return wire.IFINFO.pack(family, 0, index, flags, change)


def _interface_attrs(name: str, mtu: int, group: int) -> bytes:
    return wire.attr_str(IFLA_IFNAME, name) + wire.attr_u32(IFLA_MTU, mtu) + wire.attr_u32(IFLA_GROUP, group)


@contextmanager
def _ignoring(*codes: int) -> Iterator[None]:
    """Treat these refusals as success: the change asked for is already true."""
    try:
        yield
    except wire.NetlinkError as exc:
        if exc.errno not in codes:
            raise


class Netlink:
    """One rtnetlink socket on the namespace it was created in."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._pass: dict[frozenset[str] | None, LinkDump] | None = None  # the dumps of the pass under way

    @contextmanager
    def one_dump(self) -> Iterator[None]:
        """Within it, dump() reads the tables once and hands every caller that same dump: the
        controllers observing one pass (networks, sandboxes) share one read of the host."""
        self._pass = {}
        try:
            yield
        finally:
            self._pass = None

    def close(self) -> None:
        self._sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> None:
        wire.request(self._sock, kind, flags, body)

    def index_of(self, name: str) -> int:
        return self._link(name).index

    def link_named(self, name: str) -> Link | None:
        """The link of that name as it is now, if any."""
        with _ignoring(errno.ENODEV):
            return self._link(name)
        return None

    def _link_at(self, index: int) -> Link | None:
        with _ignoring(errno.ENODEV):
            return rtnl_dump.parse_link(wire.get(self._sock, RTM_GETLINK, _ifinfo(index))[0])
        return None

    def _link(self, name: str) -> Link:
        answers = wire.get(self._sock, RTM_GETLINK, _ifinfo() + wire.attr_str(IFLA_IFNAME, name))
        return rtnl_dump.parse_link(answers[0])

    def dump(self, names: frozenset[str] | None = None) -> LinkDump:
        """The tables, each retried on its own: under churn, one interrupted table does not
        throw away the others. With a few `names`: only the links of those names that exist, with
        their addresses and no routes (a few requests, however many links the host has). Read
        once per `one_dump` (for the same `names`)."""
        if self._pass is not None and names in self._pass:
            return self._pass[names]
        if names is None or len(names) > MANY_NAMES:  # everything: more than the caller asked for
            with wire.strict_checking(self._sock):
                dump = rtnl_dump.parse([self._dump_table(kind, body) for kind, body in rtnl_dump.TABLES])
        else:
            dump = self._named(names)
        if self._pass is not None:
            self._pass[names] = dump
        return dump

    def links_named(self, names: Collection[str]) -> list[Link]:
        """The links of these names that exist, as they are now: one request each for a few,
        one dump of the link table for many (a dump costs about as much as 50 requests)."""
        if len(names) > MANY_NAMES:
            kind, request = rtnl_dump.TABLES[0]
            every = [rtnl_dump.parse_link(answer) for answer in self._dump_table(kind, request)]
            return [link for link in every if link.name in names]
        return [found for name in sorted(names) if (found := self.link_named(name)) is not None]

    def _named(self, names: frozenset[str]) -> LinkDump:
        """The named links and the bridges they are enslaved to (a port's master is named by it)."""
        links = self.links_named(names)
        known = {link.index for link in links}
        links += [link for index in sorted({link.master for link in links if link.master} - known)
                  if (link := self._link_at(index)) is not None]
        with wire.strict_checking(self._sock):  # the index in an address dump's header honoured
            answers = [body for link in links for body in self._addresses_at(link.index)]
        addresses = tuple(a for body in answers if (a := rtnl_dump.parse_address(body)) is not None)
        return LinkDump(links=tuple(links), addresses=addresses, routes=())

    def _addresses_at(self, index: int) -> list[bytes]:
        """The address answers of both families of one link (strict checking on); none once it
        is gone (ENODEV: deleted since it was listed)."""
        answers: list[bytes] = []
        with _ignoring(errno.ENODEV):
            for family in (AF_INET, AF_INET6):
                answers += self._dump_table(RTM_GETADDR, wire.IFADDR.pack(family, 0, 0, 0, index))
        return answers

    @_retry_transient
    def _dump_table(self, kind: int, body: bytes) -> list[bytes]:
        return rtnl_dump.dump_table(self._sock, kind, body)

    @_retry_transient
    def create_bridge(self, name: str, mtu: int, alias: str, group: int) -> int:
        """Create a bridge carrying our marks; returns its index. The kernel ignores
        IFLA_IFALIAS on creation, so the alias is set right after; the link group is set
        atomically with the creation, so a crash in between leaves a bridge that is still
        recognisably ours (group set, no alias) rather than a foreign-looking one."""
        linkinfo = wire.nested(IFLA_LINKINFO, wire.attr_str(IFLA_INFO_KIND, "bridge"))
        self._request(RTM_NEWLINK, _CREATE, _ifinfo() + _interface_attrs(name, mtu, group) + linkinfo)
        index = self.index_of(name)
        self.set_link(index, alias=alias)
        return index

    @_retry_transient
    def create_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int, group: int) -> int:
        """A veth pair whose peer is born inside another namespace (never visible on the host
        under its container name, so two containers' eth0 never clash); returns the host end's
        index. Both ends get our link group atomically; aliases are set by the caller."""
        peer_info = _ifinfo() + _interface_attrs(peer, mtu, group) + wire.attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        linkinfo = wire.nested(IFLA_LINKINFO, wire.attr_str(IFLA_INFO_KIND, "veth"),
                               wire.nested(IFLA_INFO_DATA, wire.attr(VETH_INFO_PEER, peer_info)))
        self._request(RTM_NEWLINK, _CREATE, _ifinfo() + _interface_attrs(name, mtu, group) + linkinfo)
        return self.index_of(name)

    @_retry_transient
    def set_link(self, index: int, *, mtu: int | None = None, up: bool | None = None,
                 alias: str | None = None, master: int | None = None, mac: str | None = None) -> None:
        """`mac` ("02:42:..."): the kernel sets it before it brings the link up, and changes it on
        a link that is up (bridges and veths allow that)."""
        attrs = b"".join((
            wire.attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", ""))) if mac is not None else b"",
            wire.attr_u32(IFLA_MTU, mtu) if mtu is not None else b"",
            wire.attr_str(IFLA_IFALIAS, alias) if alias is not None else b"",
            wire.attr_u32(IFLA_MASTER, master) if master is not None else b"",
        ))
        change = IFF_UP if up is not None else 0
        if attrs or change:
            self._request(RTM_NEWLINK, 0, _ifinfo(index, flags=IFF_UP if up else 0, change=change) + attrs)

    @_retry_transient
    def set_hairpin(self, index: int, on: bool) -> None:
        """Hairpin on a bridge port lets a container reach itself through a published port.
        IFLA_PROTINFO must be flagged nested, or the bridge reads it as the old one-byte state."""
        protinfo = wire.nested(IFLA_PROTINFO, wire.attr(IFLA_BRPORT_MODE, bytes([int(on)])))
        self._request(RTM_SETLINK, 0, _ifinfo(index, family=AF_BRIDGE) + protinfo)

    @_retry_transient
    def replace_default_route(self, gateway: str, index: int) -> None:
        """The default route of the gateway's family (IPv4 or IPv6) via `gateway` on `index`."""
        via = ip_address(gateway)
        body = wire.RTMSG.pack(_family(via.version), 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                               RTN_UNICAST, 0)
        body += wire.attr(RTA_GATEWAY, via.packed) + wire.attr_u32(RTA_OIF, index)
        self._request(RTM_NEWROUTE, wire.NLM_F_CREATE | wire.NLM_F_REPLACE, body)

    @_retry_transient
    def delete_route(self, dst: Net, index: int | None) -> None:
        """Delete a main-table route; one already gone counts as deleted."""
        body = wire.RTMSG.pack(_family(dst.version), dst.prefixlen, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_NOWHERE, 0, 0)
        if dst.prefixlen:
            body += wire.attr(RTA_DST, dst.network_address.packed)
        if index:
            body += wire.attr_u32(RTA_OIF, index)
        with _ignoring(errno.ESRCH, errno.ENOENT):  # IPv4 says ESRCH, IPv6 ENOENT
            self._request(RTM_DELROUTE, 0, body)

    @_retry_transient
    def delete_link(self, index: int) -> None:
        """Delete a link; one that is already gone counts as deleted."""
        with _ignoring(errno.ENODEV):
            self._request(RTM_DELLINK, 0, _ifinfo(index))

    @_retry_transient
    def add_address(self, index: int, interface: Interface) -> None:
        """Add an address; one already present counts as added. An IPv6 one skips duplicate
        address detection (IFA_F_NODAD): it is ours by IPAM, and DAD would leave it tentative,
        unusable as a source or a gateway, for a second or more."""
        body = self._address_body(index, interface)
        if interface.version == 4:
            body += wire.attr(IFA_BROADCAST, interface.network.broadcast_address.packed)
        else:
            body += wire.attr_u32(IFA_FLAGS, IFA_F_NODAD)
        with _ignoring(errno.EEXIST):
            self._request(RTM_NEWADDR, _CREATE, body)

    @_retry_transient
    def delete_address(self, index: int, interface: Interface) -> None:
        with _ignoring(errno.EADDRNOTAVAIL, errno.ENODEV):
            self._request(RTM_DELADDR, 0, self._address_body(index, interface))

    @staticmethod
    def _address_body(index: int, interface: Interface) -> bytes:
        packed = interface.ip.packed
        return (wire.IFADDR.pack(_family(interface.version), interface.network.prefixlen, 0, 0, index)
                + wire.attr(IFA_LOCAL, packed) + wire.attr(IFA_ADDRESS, packed))


def _family(version: int) -> int:
    return AF_INET if version == 4 else AF_INET6


@contextmanager
def host_netlink() -> Iterator[Netlink]:
    """A socket on the caller's own namespace."""
    netlink = Netlink(wire.new_socket())
    try:
        yield netlink
    finally:
        netlink.close()
