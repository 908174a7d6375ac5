"""Conflicts of published ports with the live host, reported as Issues at the port's spec
field (`containers.<name>.ports[<index>]`): they stop the run before anything is touched.

A host process listening on a port our rules already publish is no conflict: it bound the port
after we published it, our DNAT takes the traffic before local delivery, so the port is ours and
the process gets none of it. It is an intruder, which `status` reports; refusing would block
every later change of the stack (an env change) over a port that does not change.

A port is published over IPv6 too when its container has an IPv6 address on its default_route
network and no IPv4 host_ip narrows it (`ipv6`): every IPv6 listener on that port is then
shadowed as well (the IPv6 DNAT takes every local address but ::1), while a port
published over IPv4 only leaves a listener on a plain IPv6 address alone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from controllers.base import Desired
from controllers.firewall_rules import PortKey
from kernel.netfilter_listeners import Listener
from specs.errors import Issue, Loc


@dataclass(frozen=True)
class PublishedPort:
    """A port the run wants published, and where the spec asks for it."""

    port: PortKey
    loc: Loc
    ipv6: bool = False
    """Published over IPv6 as well as IPv4."""


@dataclass(frozen=True)
class Intruder:
    """A host process listening on a port we publish: it receives none of the port's traffic."""

    port: PortKey
    listener: Listener

    def describe(self) -> str:
        return (f"{_port_text(self.port)} of container '{self.port.container}' is also bound by "
                f"{self.listener.describe()}; it gets no traffic, the published port takes it")


def port_text(port: PortKey) -> str:
    """`[ip:]port/protocol`, as the spec writes the host side of a mapping."""
    where = f"{port.host_ip}:" if port.host_ip else ""
    return f"{where}{port.host}/{port.protocol}"


def _port_text(port: PortKey) -> str:
    return f"host port {port_text(port)}"


def _ipv4_view(address: IPv4Address | IPv6Address) -> IPv4Address | None:
    """The IPv4 address a socket bound to `address` receives on: itself, its v4-mapped form,
    any (0.0.0.0) for a dual-stack ::, none for a plain IPv6 address."""
    if isinstance(address, IPv4Address):
        return address
    return address.ipv4_mapped or (IPv4Address(0) if address.is_unspecified else None)


def _listener_overlaps(port: PortKey, ipv6: bool, listener: Listener) -> bool:
    """Given the same protocol and port: an IPv4 DNAT shadows a listener on that address, on
    every address, or on any address when the port itself is published on every address; an
    IPv6 one (`ipv6`) any IPv6 listener but one on ::1 alone (left out of the DNAT: a listener
    there is the [::1] proxy's conflict, controllers.proxy)."""
    if ipv6 and listener.address.version == 6 and not listener.address.is_loopback:
        return True
    address = _ipv4_view(listener.address)
    if address is None:
        return False
    return address.is_unspecified or port.host_ip is None or address == port.host_ip


Slot = tuple[str, int]
"""(protocol, port): candidates are grouped by it first, so that a thousand ports do not cost a
million comparisons."""


def _by_slot(host_listeners: Iterable[Listener]) -> dict[Slot, list[Listener]]:
    listeners: dict[Slot, list[Listener]] = {}
    for listener in host_listeners:
        listeners.setdefault((listener.protocol, listener.port), []).append(listener)
    return listeners


def _shadowed(port: PortKey, ipv6: bool, listeners: dict[Slot, list[Listener]]) -> list[Listener]:
    return [listener for listener in listeners.get((port.protocol, port.host), [])
            if _listener_overlaps(port, ipv6, listener)]


def published_slots(desired: Desired) -> set[Slot]:
    """The slots of every port this pass diffs (those of its focus, if it has one): only a
    listener on one of them can be in conflict, so only its process needs looking up."""
    return {(mapping.protocol, mapping.host) for stack in desired.stacks.values() if stack.name in desired.scope
            for key in desired.containers_of(stack) for mapping in stack.containers[key].ports}


def intruders(live_ports: Mapping[PortKey, bool], host_listeners: Sequence[Listener]) -> list[Intruder]:
    """The host processes listening on ports our rules publish (`live_ports`, as observed:
    True for a port published over IPv6 too), by port (not in the order of a read, which a
    read derived from the last one does not keep)."""
    listeners = _by_slot(host_listeners)
    return [Intruder(port, listener) for port, ipv6 in sorted(live_ports.items(), key=lambda item: item[0].key)
            for listener in _shadowed(port, ipv6, listeners)]


def conflicts(published: Sequence[PublishedPort], kept: Sequence[PortKey],
              host_listeners: Sequence[Listener], live_ports: Mapping[PortKey, bool]) -> list[Issue]:
    """Each published port wanted twice in this run, already published by a stack of ours
    outside it (`kept`), or listened on by a host process while it is not published yet for
    that listener's family (`live_ports`, the ports our rules publish now, True when over IPv6
    too: a listener there is an intruder)."""
    publishers: dict[Slot, list[PortKey]] = {}
    for port in [*(p.port for p in published), *kept]:
        publishers.setdefault((port.protocol, port.host), []).append(port)
    listeners = _by_slot(host_listeners)
    issues = []
    for mine in published:
        slot = (mine.port.protocol, mine.port.host)
        issues += [Issue(mine.port.stack, mine.loc, f"{_port_text(mine.port)} is also published by "
                                                    f"{_publisher(other, mine.port.stack)}")
                   for other in publishers[slot] if other != mine.port and other.overlaps(mine.port)]
        live = live_ports.get(mine.port)
        issues += [Issue(mine.port.stack, mine.loc, f"{_port_text(mine.port)} is in use: {listener.describe()}")
                   for listener in _shadowed(mine.port, mine.ipv6, listeners)
                   if live is None or not _listener_overlaps(mine.port, live, listener)]
    return issues


def _publisher(port: PortKey, stack: str) -> str:
    if port.stack == stack:
        return f"container '{port.container}'"
    return f"stack '{port.stack}' (container '{port.container}')"
