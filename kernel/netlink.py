"""Links, addresses and routes of one network namespace, over netlink (pyroute2).

Raw pyroute2 messages never leave this module: callers get our own frozen records. Reads are
one dump each per pass (links, addresses, routes); a dump interrupted by a concurrent change
(common while namespaces are being deleted) is retried.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from typing import TYPE_CHECKING

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IFF_UP = 0x1
AF_INET = 2
RT_TABLE_MAIN = 254


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


@dataclass(frozen=True)
class Address:
    index: int
    interface: IPv4Interface


@dataclass(frozen=True)
class Route:
    """A route of the main table (the connected routes of addresses included)."""

    dst: IPv4Network
    index: int | None
    gateway: str | None


@dataclass(frozen=True)
class LinkDump:
    links: tuple[Link, ...]
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]

    def addresses_of(self, index: int) -> tuple[IPv4Interface, ...]:
        return tuple(a.interface for a in self.addresses if a.index == index)

    def by_name(self) -> dict[str, Link]:
        return {link.name: link for link in self.links}

    def by_index(self) -> dict[int, Link]:
        return {link.index: link for link in self.links}


def _transient(exc: BaseException) -> bool:
    """Interrupted dumps and EBUSY/EAGAIN are races with other actors; worth another try."""
    from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

    if isinstance(exc, NetlinkDumpInterrupted):
        return True
    return isinstance(exc, NetlinkError) and exc.code in (errno.EBUSY, errno.EAGAIN, errno.EINTR)


_retry_transient = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.01, max=0.2),
    reraise=True,
)


def _link_record(msg: object) -> Link:
    get = msg.get  # type: ignore[attr-defined]
    mode = get(("linkinfo", "slave_data", "mode")) if get(("linkinfo", "slave_kind")) == "bridge" else None
    return Link(
        index=msg["index"],  # type: ignore[index]
        name=get("ifname"),
        kind=get(("linkinfo", "kind")),
        alias=get("ifalias"),
        mtu=get("mtu"),
        up=bool(msg["flags"] & IFF_UP),  # type: ignore[index]
        master=get("master"),
        group=get("group") or 0,
        hairpin=None if mode is None else bool(mode),
    )


class Netlink:
    """One netlink socket on the caller's current network namespace."""

    def __init__(self, ipr: IPRoute):
        self._ipr = ipr

    @_retry_transient
    def dump(self) -> LinkDump:
        links = tuple(_link_record(m) for m in self._ipr.get_links())
        addresses = tuple(
            Address(index=m["index"], interface=IPv4Interface(f"{m.get('address')}/{m['prefixlen']}"))
            for m in self._ipr.get_addr(family=AF_INET)
        )
        routes = tuple(
            Route(dst=IPv4Network(f"{m.get('dst') or '0.0.0.0'}/{m['dst_len']}"),
                  index=m.get("oif"), gateway=m.get("gateway"))
            for m in self._ipr.get_routes(family=AF_INET, table=RT_TABLE_MAIN)
        )
        return LinkDump(links=links, addresses=addresses, routes=routes)

    @_retry_transient
    def create_bridge(self, name: str, mtu: int, alias: str, group: int) -> int:
        """Create a bridge carrying our marks; returns its index. The kernel ignores
        IFLA_IFALIAS on creation, so the alias is set right after; the link group is set
        atomically with the creation, so a crash in between leaves a bridge that is still
        recognisably ours (group set, no alias) rather than a foreign-looking one."""
        self._ipr.link("add", ifname=name, kind="bridge", mtu=mtu, group=group)
        index = self._ipr.link_lookup(ifname=name)[0]
        self._ipr.link("set", index=index, ifalias=alias)
        return index

    @_retry_transient
    def create_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int, group: int) -> int:
        """A veth pair whose peer is born inside another namespace (never visible on the host
        under its container name, so two containers' eth0 never clash); returns the host end's
        index. Both ends get our link group atomically; aliases are set by the caller."""
        self._ipr.link("add", ifname=name, kind="veth", mtu=mtu, group=group,
                       peer={"ifname": peer, "net_ns_fd": peer_netns_fd, "mtu": mtu, "group": group})
        return self._ipr.link_lookup(ifname=name)[0]

    @_retry_transient
    def set_link(self, index: int, *, mtu: int | None = None, up: bool | None = None,
                 alias: str | None = None, master: int | None = None) -> None:
        changes: dict[str, object] = {}
        if mtu is not None:
            changes["mtu"] = mtu
        if alias is not None:
            changes["ifalias"] = alias
        if master is not None:
            changes["master"] = master
        if up is not None:
            changes["state"] = "up" if up else "down"
        if changes:
            self._ipr.link("set", index=index, **changes)

    @_retry_transient
    def set_hairpin(self, index: int, on: bool) -> None:
        """Hairpin on a bridge port lets a container reach itself through a published port."""
        self._ipr.brport("set", index=index, mode=int(on))

    @_retry_transient
    def replace_default_route(self, gateway: str, index: int) -> None:
        self._ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)

    @_retry_transient
    def delete_route(self, dst: IPv4Network, index: int | None) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.route("del", dst=str(dst), **({"oif": index} if index else {}))
        except NetlinkError as exc:
            if exc.code != errno.ESRCH:
                raise

    @_retry_transient
    def delete_link(self, index: int) -> None:
        """Delete a link; one that is already gone counts as deleted."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise

    @_retry_transient
    def add_address(self, index: int, interface: IPv4Interface) -> None:
        """Add an address; one already present counts as added."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.addr("add", index=index, address=str(interface.ip),
                           prefixlen=interface.network.prefixlen,
                           broadcast=str(interface.network.broadcast_address))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    @_retry_transient
    def delete_address(self, index: int, interface: IPv4Interface) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.addr("del", index=index, address=str(interface.ip),
                           prefixlen=interface.network.prefixlen)
        except NetlinkError as exc:
            if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise


@contextmanager
def host_netlink() -> Iterator[Netlink]:
    """A socket on the caller's own namespace. pyroute2 is imported here, not at module load:
    importing it costs ~0.1-0.3 s, which `validate` and `schema` should not pay."""
    from pyroute2 import IPRoute

    ipr = IPRoute()
    try:
        yield Netlink(ipr)
    finally:
        ipr.close()
