"""LinkDump snapshots shaped as the kernel returns them, for the pure diff tests of networks and
sandboxes (no tests here), and the rows those tests compare a Diff's changes on.

What the kernel shows and kernel/rtnl_dump.py keeps: every address of an up link comes with its
connected route in the main table (but 127.0.0.0/8 on lo, whose route lives in the local table;
::1/128 on lo has one in main), a link that is down has lost those routes and any route through
it, and IPv6 link-local addresses and routes are left out by the parser, so they are not made
here either. Links we create carry our link group on both ends, set at creation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_interface, ip_network
from typing import Any

from controllers.base import Diff
from controllers.change import Action
from kernel.rtnl_dump import Address, Link, LinkDump, Route
from specs import names

LOOPBACK_MTU = 65536
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class Nic:
    """A link as one dump shows it, with its addresses ("10.88.1.1/24", "fd00:88:1::1/64")."""

    link: Link
    addresses: tuple[str, ...] = ()


def nic(index: int, name: str, *addresses: str, kind: str | None = None, alias: str | None = None,
        mtu: int = DEFAULT_MTU, up: bool = True, master: int | None = None, group: int = 0,
        hairpin: bool | None = None, ipv6: bool | None = None) -> Nic:
    return Nic(Link(index=index, name=name, kind=kind, alias=alias, mtu=mtu, up=up, master=master,
                    group=group, hairpin=hairpin, ipv6=ipv6), addresses)


def with_link(base: Nic, **changes: Any) -> Nic:
    """`base` drifted: its link with the given fields changed, its addresses kept."""
    return replace(base, link=replace(base.link, **changes))


def loopback(up: bool = True) -> Nic:
    """`lo`, index 1 in every namespace: a fresh namespace's is down and holds no address."""
    return nic(1, "lo", *(("127.0.0.1/8", "::1/128") if up else ()), mtu=LOOPBACK_MTU, up=up)


def bridge(index: int, stack: str, network: str, *addresses: str, name: str | None = None,
           mtu: int = DEFAULT_MTU, up: bool = True) -> Nic:
    """One of our bridges, with its marks (alias and link group), named as the spec defaults it."""
    return nic(index, name or names.default_bridge_name(stack, network), *addresses, kind="bridge",
               alias=names.network_alias(stack, network), mtu=mtu, up=up, group=names.LINK_GROUP)


def _connected(nic: Nic) -> list[Route]:
    routes: list[Route] = []
    for text in nic.addresses:
        interface = ip_interface(text)
        route = Route(dst=interface.network, index=nic.link.index, gateway=None)
        if nic.link.up and not (interface.version == 4 and interface.ip.is_loopback) and route not in routes:
            routes.append(route)
    return routes


def linkdump(*nics: Nic, gateways: Sequence[tuple[int, str]] = ()) -> LinkDump:
    """The dump of a namespace holding `nics`, with a default route through each (link index,
    gateway) of `gateways` whose link is up."""
    up = {n.link.index for n in nics if n.link.up}
    defaults = [Route(dst=ip_network("0.0.0.0/0" if ":" not in gateway else "::/0"), index=index, gateway=gateway)
                for index, gateway in gateways if index in up]
    return LinkDump(links=tuple(n.link for n in nics),
                    addresses=tuple(Address(n.link.index, ip_interface(a)) for n in nics for a in n.addresses),
                    routes=tuple(r for n in nics for r in _connected(n)) + tuple(defaults))


FieldRow = tuple[str, object, object]
ChangeRow = tuple[Action, str, str, str, tuple[FieldRow, ...]]


def change_rows(diff: Diff) -> list[ChangeRow]:
    """(action, kind, key, reason, ((path, old, new), ...)) of each change, in plan order."""
    return [(c.action, c.kind, c.key, c.reason, tuple((f.path, f.old, f.new) for f in c.fields))
            for c in diff.changes]
