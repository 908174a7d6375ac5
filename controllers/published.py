"""Where a container's published ports lead: the addresses on its default_route network that
the firewall's DNAT and the [::1] proxy both send its ports to."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from controllers.base import Desired

if TYPE_CHECKING:
    from specs.model import Container, Stack


@dataclass(frozen=True)
class Targets:
    address: IPv4Address
    address6: IPv6Address | None
    """Its IPv6 address when the network is dual-stack: the port is published over IPv6 too."""


def port_targets(stack: Stack, name: str, container: Container, desired: Desired) -> Targets | str:
    """The container's addresses on its default_route network, or why its ports cannot be
    published."""
    route = container.default_route
    network = stack.networks.get(route) if route else None
    if not route or network is None or network.internal:
        return "published ports need a non-internal default_route network"
    address = desired.addresses.get((stack.name, name, route))
    if address is None:
        return f"no address on network '{route}' was allocated"
    return Targets(address, desired.addresses6.get((stack.name, name, route)) if network.subnet6 else None)
