"""Conflicts of published ports with the live host, reported as Issues at the port's spec
field (`containers.<name>.ports[<index>]`): they stop the run before anything is touched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from controllers.firewall_rules import PortKey
from kernel.netfilter_listeners import Listener
from specs.errors import Issue, Loc


@dataclass(frozen=True)
class PublishedPort:
    """A port the run wants published, and where the spec asks for it."""

    port: PortKey
    loc: Loc


def _port_text(port: PortKey) -> str:
    where = f"{port.host_ip}:" if port.host_ip else ""
    return f"host port {where}{port.host}/{port.protocol}"


def _ipv4_view(address: IPv4Address | IPv6Address) -> IPv4Address | None:
    """The IPv4 address a socket bound to `address` receives on: itself, its v4-mapped form,
    any (0.0.0.0) for a dual-stack ::, none for a plain IPv6 address."""
    if isinstance(address, IPv4Address):
        return address
    return address.ipv4_mapped or (IPv4Address(0) if address.is_unspecified else None)


def _listener_overlaps(port: PortKey, listener: Listener) -> bool:
    """Given the same protocol and port: an IPv4 DNAT shadows a listener on that address, on
    every address, or on any address when the port itself is published on every address."""
    address = _ipv4_view(listener.address)
    if address is None:
        return False
    return address.is_unspecified or port.host_ip is None or address == port.host_ip


def conflicts(published: Sequence[PublishedPort], kept: Sequence[PortKey],
              host_listeners: Sequence[Listener]) -> list[Issue]:
    """Each published port wanted twice in this run, already published by a stack of ours
    outside it (`kept`), or listened on by a host process. Candidates are grouped by (protocol,
    port) first: a thousand ports must not cost a million comparisons."""
    publishers: dict[tuple[str, int], list[PortKey]] = {}
    for port in [*(p.port for p in published), *kept]:
        publishers.setdefault((port.protocol, port.host), []).append(port)
    listeners: dict[tuple[str, int], list[Listener]] = {}
    for listener in host_listeners:
        listeners.setdefault((listener.protocol, listener.port), []).append(listener)
    issues = []
    for mine in published:
        slot = (mine.port.protocol, mine.port.host)
        issues += [Issue(mine.port.stack, mine.loc, f"{_port_text(mine.port)} is also published by "
                                                    f"{_publisher(other, mine.port.stack)}")
                   for other in publishers[slot] if other != mine.port and other.overlaps(mine.port)]
        issues += [Issue(mine.port.stack, mine.loc, f"{_port_text(mine.port)} is in use: "
                                                    f"{listener.describe()}")
                   for listener in listeners.get(slot, []) if _listener_overlaps(mine.port, listener)]
    return issues


def _publisher(port: PortKey, stack: str) -> str:
    if port.stack == stack:
        return f"container '{port.container}'"
    return f"stack '{port.stack}' (container '{port.container}')"
