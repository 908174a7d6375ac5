"""Address management (pure): static addresses honoured, allocated ones sticky.

An endpoint keeps its address across recreates and restarts: its lease in the store is
preferred, then the address the kernel shows on it (so a lost store is rebuilt from the
kernel), then the lowest free host address. Never the network address, the broadcast address
(IPv4), the gateway, a static address of another endpoint, an address leased to another
endpoint, or one live on the network.

The same rules serve both families: one `assign` call per family (IPv4 addresses of every
endpoint, IPv6 ones of the endpoints on dual-stack networks), since an endpoint holds one of
each and both are keyed by the endpoint.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Generic, NamedTuple, TypeVar, cast

EndpointKey = tuple[str, str, str]
"""(stack, container, network)."""

A = TypeVar("A", IPv4Address, IPv6Address)
Subnet = IPv4Network | IPv6Network


class Request(NamedTuple, Generic[A]):
    """One endpoint's ask. A tuple: a pass at a thousand containers builds one per endpoint and
    family, and a frozen dataclass costs ~4x as much to build."""

    key: EndpointKey
    subnet: Subnet  # of A's family
    gateway: A
    static: A | None


class Exhausted(Exception):
    def __init__(self, key: EndpointKey, subnet: Subnet):
        self.key = key
        super().__init__(f"no free address left in {subnet} for container {key[1]}")


def assign(requests: Iterable[Request[A]], leases: Mapping[EndpointKey, A], live: Mapping[EndpointKey, A],
           in_use: Mapping[Subnet, Container[A]]) -> dict[EndpointKey, A]:
    """Addresses for every request, in request order (deterministic).

    `leases`: from the store; `live`: the address the kernel shows on each of our endpoints;
    `in_use`: per subnet, addresses held by anything not in `requests` (other stacks, foreign
    hosts on the bridge), which must not be handed out (ones outside the subnet may be among
    them: they are never handed out in it anyway). Only looked up, never copied: a focused pass
    hands in a view of a thousand addresses, in which it looks up its own endpoints' addresses
    (and, for an endpoint with none, the subnet's hosts up to the first free one)."""
    requests = list(requests)
    # Per subnet, what the pass gives or reserves, and what is in use besides (looked up once
    # per request: a subnet's hash is computed in Python).
    pools: dict[Subnet, tuple[set[A], Container[A]]] = {}
    for r in requests:
        pool = pools.get(r.subnet)
        if pool is None:
            pool = pools[r.subnet] = (set(), in_use.get(r.subnet, ()))
        pool[0].add(r.gateway)
        if r.static is not None:
            pool[0].add(r.static)
    result: dict[EndpointKey, A] = {r.key: r.static for r in requests if r.static is not None}
    # Every kept address first, new ones after: a container added earlier in the spec must not
    # take the address a running one holds (it would have to be renumbered).
    fresh: list[Request[A]] = []
    for r in (r for r in requests if r.static is None):
        taken, used = pools[r.subnet]
        address = _sticky(r, (leases.get(r.key), live.get(r.key)), taken, used)
        if address is None:
            fresh.append(r)
            continue
        taken.add(address)
        result[r.key] = address
    free: dict[Subnet, Iterator[A]] = {}
    for r in fresh:
        taken, used = pools[r.subnet]
        if r.subnet not in free:
            free[r.subnet] = _free_hosts(r.subnet, taken, used)
        address = next(free[r.subnet], None)
        if address is None:
            raise Exhausted(r.key, r.subnet)
        taken.add(address)
        result[r.key] = address
    return {r.key: result[r.key] for r in requests}


def _sticky(request: Request[A], candidates: Iterable[A | None], taken: set[A], in_use: Container[A]) -> A | None:
    for address in candidates:
        if address is not None and _usable(address, request.subnet) and address not in taken \
                and address not in in_use:
            return address
    return None


def _usable(address: A, subnet: Subnet) -> bool:
    """In the subnet and not reserved: the network address (IPv6's Subnet-Router anycast too)
    and IPv4's broadcast address; on a point-to-point subnet (RFC 3021 /31, RFC 6164 /127)
    both addresses are hosts."""
    if address not in subnet:
        return False
    if subnet.prefixlen >= subnet.max_prefixlen - 1:
        return True
    reserved = {subnet.network_address} | ({subnet.broadcast_address} if subnet.version == 4 else set())
    return address not in reserved


def _free_hosts(subnet: Subnet, taken: set[A], in_use: Container[A]) -> Iterator[A]:
    """The host addresses neither `taken` nor `in_use`, lowest first, one at a time (hosts() is
    lazy: a /64 is not listed). One walk hands out a pass's new addresses in turn, each the lowest
    then free: `taken` holds every kept and static address before the walk starts, and only grows
    (by the addresses the walk itself hands out), so what it stepped over stays taken. A walk
    from the start for each new address cost N x N: a quarter of a second of a cold apply of a
    thousand containers."""
    hosts = cast(Iterator[A], subnet.hosts())  # a subnet of A's family: Request pairs them
    return (a for a in hosts if a not in taken and a not in in_use)
