"""Address management (pure): static addresses honoured, allocated ones sticky.

An endpoint keeps its address across recreates and restarts: its lease in the store is
preferred, then the address the kernel shows on it (so a lost store is rebuilt from the
kernel), then the lowest free host address. Never the network, broadcast or gateway address,
a static address of another endpoint, an address leased to another endpoint, or one live on
the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

EndpointKey = tuple[str, str, str]
"""(stack, container, network)."""


@dataclass(frozen=True)
class Request:
    key: EndpointKey
    subnet: IPv4Network
    gateway: IPv4Address
    static: IPv4Address | None


class Exhausted(Exception):
    def __init__(self, key: EndpointKey, subnet: IPv4Network):
        self.key = key
        super().__init__(f"no free address left in {subnet} for container {key[1]}")


def assign(requests: Iterable[Request], leases: Mapping[EndpointKey, IPv4Address],
           live: Mapping[EndpointKey, IPv4Address],
           in_use: Mapping[IPv4Network, set[IPv4Address]]) -> dict[EndpointKey, IPv4Address]:
    """Addresses for every request, in request order (deterministic).

    `leases`: from the store; `live`: the address the kernel shows on each of our endpoints;
    `in_use`: per subnet, addresses held by anything not in `requests` (other stacks, foreign
    hosts on the bridge), which must not be handed out."""
    requests = list(requests)
    taken: dict[IPv4Network, set[IPv4Address]] = {}
    for r in requests:
        taken.setdefault(r.subnet, set(in_use.get(r.subnet, ()))).update({r.gateway})
        if r.static is not None:
            taken[r.subnet].add(r.static)
    result: dict[EndpointKey, IPv4Address] = {}
    for r in (r for r in requests if r.static is not None):
        result[r.key] = r.static
    for r in (r for r in requests if r.static is None):
        address = _sticky(r, (leases.get(r.key), live.get(r.key)), taken[r.subnet])
        if address is None:
            address = _first_free(r.subnet, taken[r.subnet])
        if address is None:
            raise Exhausted(r.key, r.subnet)
        taken[r.subnet].add(address)
        result[r.key] = address
    return result


def _sticky(request: Request, candidates: Iterable[IPv4Address | None],
            taken: set[IPv4Address]) -> IPv4Address | None:
    for address in candidates:
        if address is not None and _usable(address, request.subnet) and address not in taken:
            return address
    return None


def _usable(address: IPv4Address, subnet: IPv4Network) -> bool:
    if address not in subnet:
        return False
    if subnet.prefixlen >= 31:  # RFC 3021 point-to-point: both addresses are hosts
        return True
    return address not in (subnet.network_address, subnet.broadcast_address)


def _first_free(subnet: IPv4Network, taken: set[IPv4Address]) -> IPv4Address | None:
    return next((a for a in subnet.hosts() if a not in taken), None)
