"""Container addresses for a pass: IPAM fed from the store's leases and the live kernel, once
per family (IPv6 only for the endpoints on dual-stack networks)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from operator import attrgetter
from typing import Generic, cast

from controllers.base import Focus, containers_among
from controllers.sandbox import SandboxObservation
from specs.errors import Issue
from specs.model import Attachment, Stack
from state.ipam import A, EndpointKey, Exhausted, Request, Subnet, assign


@dataclass(frozen=True)
class _Family(Generic[A]):
    """Where one address family's endpoints, subnets and static addresses are in a stack."""

    subnets: Callable[[Stack], dict[str, tuple[Subnet, A]]]
    """(subnet, gateway) of each network with one of this family."""
    static: Callable[[Attachment], A | None]


def _subnets4(stack: Stack) -> dict[str, tuple[Subnet, IPv4Address]]:
    return {key: (net.assigned_subnet, net.assigned_gateway) for key, net in stack.networks.items()}


def _subnets6(stack: Stack) -> dict[str, tuple[Subnet, IPv6Address]]:
    """Dual-stack networks only (gateway6 is set whenever subnet6 is)."""
    return {key: (net.subnet6, net.gateway6) for key, net in stack.networks.items()
            if net.subnet6 is not None and net.gateway6 is not None}


IPV4 = _Family[IPv4Address](_subnets4, attrgetter("ip"))
IPV6 = _Family[IPv6Address](_subnets6, attrgetter("ip6"))


def _requests(family: _Family[A], stacks: Sequence[Stack],
              among: Collection[tuple[str, str]] | None = None) -> list[Request[A]]:
    """The requests of every endpoint with a subnet of this family (of the containers `among`
    only, when given: a focused pass asks for its own endpoints alone)."""
    requests: list[Request[A]] = []
    for stack in stacks:
        nets = family.subnets(stack)
        if nets:  # most stacks are IPv4 only: their endpoints are not even looked at for IPv6
            requests += [Request((stack.name, c_key, n_key), *nets[n_key], family.static(attachment))
                         for c_key in containers_among(stack, among)
                         for n_key, attachment in stack.containers[c_key].networks.items() if n_key in nets]
    return requests


def assign_addresses(stacks: Sequence[Stack], leases: Mapping[EndpointKey, IPv4Address],
                     leases6: Mapping[EndpointKey, IPv6Address],
                     observed: SandboxObservation, focus: Focus | None = None
                     ) -> tuple[dict[EndpointKey, IPv4Address], dict[EndpointKey, IPv6Address], list[Issue]]:
    """The IPv4 and the IPv6 addresses of every endpoint in scope, or the issue that stops the run.
    With a focus (whose pass observed only its own endpoints), the others keep their static or
    leased address and only the focus's are decided; when one of the others has neither (a lost
    store), every address is decided, as without a focus."""
    in_scope = {stack.name for stack in stacks}
    try:
        return (_assign(IPV4, stacks, leases, observed.live_addresses(), in_scope, focus),
                _assign(IPV6, stacks, leases6, observed.live_addresses6(), in_scope, focus), [])
    except Exhausted as exc:
        stack, container, network = exc.key
        return {}, {}, [Issue(stack, ("containers", container, "networks", network), str(exc))]


def _assign(family: _Family[A], stacks: Sequence[Stack], leases: Mapping[EndpointKey, A],
            live: Mapping[EndpointKey, A], in_scope: set[str], focus: Focus | None) -> dict[EndpointKey, A]:
    if focus is not None:
        held = _held_outside(family, stacks, leases, focus)
        if held is not None:
            return {**held, **_decided(_requests(family, stacks, focus.containers), leases, {**live, **held},
                                       in_scope)}
    return _decided(_requests(family, stacks), leases, live, in_scope)


def _held_outside(family: _Family[A], stacks: Sequence[Stack], leases: Mapping[EndpointKey, A],
                  focus: Focus) -> dict[EndpointKey, A] | None:
    """The static or leased address of every endpoint outside the focus; None when one has
    neither. A thousand endpoints are looked at, but no request is built for them: building
    them all was ~40% of a focused pass's desired state beside 1,000 containers."""
    held: dict[EndpointKey, A | None] = {}
    for stack in stacks:
        nets, name, static = family.subnets(stack), stack.name, family.static
        if nets:
            held.update({(key := (name, c_key, n_key)): static(attachment) or leases.get(key)
                         for c_key, container in stack.containers.items() if (name, c_key) not in focus.containers
                         for n_key, attachment in container.networks.items() if n_key in nets})
    return cast(dict[EndpointKey, A], held) if all(held.values()) else None


def _decided(requests: list[Request[A]], leases: Mapping[EndpointKey, A], live: Mapping[EndpointKey, A],
             in_scope: set[str]) -> dict[EndpointKey, A]:
    """The requests' addresses: those leased by stacks out of scope, or live on endpoints no
    request names, are in use."""
    requested = {r.key for r in requests}
    held_elsewhere = {a for k, a in leases.items() if k[0] not in in_scope}
    held_elsewhere.update(a for k, a in live.items() if k not in requested)
    # One set for every subnet: an address of another subnet is never handed out in this one
    # anyway (sorting a thousand addresses by subnet cost more than the rest of a focused pass).
    return assign(requests, leases, live, dict.fromkeys({r.subnet for r in requests}, held_elsewhere))
