"""Container addresses for a pass: IPAM fed from the store's leases and the live kernel, once
per family (IPv6 only for the endpoints on dual-stack networks)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from operator import attrgetter
from typing import Any, Generic, cast

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


class HeldAddresses:
    """What every endpoint of a focused pass's stacks holds (its static address, or else its
    lease), per family, with how many endpoints hold each address: kept by the watch agent from
    one focused pass to the next while the leases are the same object (LeaseCache hands out the
    same leases until they are written) and the stacks' names, this family's subnets, the
    containers' names and their networks are equal (the networks compared as mappings: a pass's
    copies of a stack, with its pooled subnets filled in or its images' settings merged, share
    the spec's, which compare at once), so that a repair works on its own endpoints only. Beside a
    thousand containers, looking at every endpoint again was ~0.7 ms of each repair's plan in
    quiet; checking that nothing changed, ~0.05 ms. A pass over everything forgets it: it holds
    no spec longer than until then."""

    def __init__(self) -> None:
        self._kept: dict[_Family[Any], _Kept[Any]] = {}

    def of(self, family: _Family[A], stacks: Sequence[Stack], leases: Mapping[EndpointKey, A]) -> _Held[A]:
        """What the endpoints of `stacks` hold, worked out again only when something it came from changed."""
        basis = _Basis.of(family, stacks, leases)
        kept = self._kept.get(family)
        if kept is not None and kept.basis.same_as(basis):
            return cast(_Held[A], kept.held)
        held = _held(family, stacks, leases)
        self._kept[family] = _Kept(basis, held)
        return held

    def forget(self) -> None:
        self._kept.clear()


_NETWORKS = attrgetter("networks")


@dataclass(frozen=True, eq=False)
class _Basis:
    """What a family's held addresses were worked out from: the leases (by identity), and per
    stack its name, this family's subnets, its containers' names and their networks mappings
    (compared item by item: the same objects, as a pass's copies share them, compare at once)."""

    leases: Mapping[EndpointKey, Any]
    stacks: tuple[tuple[str, dict[str, tuple[Subnet, Any]], tuple[str, ...], tuple[Mapping[str, Attachment], ...]], ...]

    @classmethod
    def of(cls, family: _Family[A], stacks: Sequence[Stack], leases: Mapping[EndpointKey, A]) -> _Basis:
        return cls(leases, tuple((stack.name, family.subnets(stack), tuple(stack.containers),
                                  tuple(map(_NETWORKS, stack.containers.values()))) for stack in stacks))

    def same_as(self, other: _Basis) -> bool:
        return self.leases is other.leases and self.stacks == other.stacks


@dataclass(frozen=True)
class _Kept(Generic[A]):
    basis: _Basis
    held: _Held[A]


@dataclass(frozen=True)
class _Held(Generic[A]):
    """What the endpoints of some stacks hold, and what is in use besides (see HeldAddresses)."""

    addresses: dict[EndpointKey, A]
    """The static or leased address of every endpoint that has one."""
    unheld: frozenset[tuple[str, str]]
    """The (stack, container) of every endpoint that has neither."""
    holders: Counter[A]
    """How many endpoints hold each address."""
    elsewhere: frozenset[A]
    """The addresses leased to stacks other than these."""


def _held(family: _Family[A], stacks: Sequence[Stack], leases: Mapping[EndpointKey, A]) -> _Held[A]:
    """Every endpoint's static or leased address, the containers with an endpoint that has
    neither, how many endpoints hold each address, and the addresses leased to other stacks:
    every endpoint and lease looked at once."""
    held: dict[EndpointKey, A | None] = {}
    for stack in stacks:
        nets, name, static = family.subnets(stack), stack.name, family.static
        if nets:
            held.update({(key := (name, c_key, n_key)): static(attachment) or leases.get(key)
                         for c_key, container in stack.containers.items()
                         for n_key, attachment in container.networks.items() if n_key in nets})
    addresses = {key: a for key, a in held.items() if a is not None}
    names = {stack.name for stack in stacks}
    return _Held(addresses, frozenset(key[:2] for key, a in held.items() if a is None), Counter(addresses.values()),
                 frozenset(_leased_elsewhere(leases, names)))


@dataclass(frozen=True)
class _InUse(Generic[A]):
    """The addresses a focused pass must not hand out, looked up rather than listed: held by an
    endpoint outside the focus, leased to another stack, or live on an endpoint that is neither
    the focus's nor holding an address of its own."""

    held: _Held[A]
    own: Counter[A]
    """The addresses the focus's own endpoints hold (they are the focus's to keep)."""
    live_elsewhere: set[A]
    """Live on endpoints the stacks in scope do not have: gone from their specs, or another
    stack's (those they have hold their static or leased address instead)."""

    def __contains__(self, address: object) -> bool:
        return (self.held.holders.get(address, 0) > self.own.get(address, 0)  # type: ignore[call-overload]
                or address in self.held.elsewhere or address in self.live_elsewhere)


def assign_addresses(stacks: Sequence[Stack], leases: Mapping[EndpointKey, IPv4Address],
                     leases6: Mapping[EndpointKey, IPv6Address],
                     observed: SandboxObservation, focus: Focus | None = None, kept: HeldAddresses | None = None
                     ) -> tuple[dict[EndpointKey, IPv4Address], dict[EndpointKey, IPv6Address], list[Issue]]:
    """The IPv4 and the IPv6 addresses of every endpoint in scope, or the issue that stops the run.
    With a focus (whose pass observed only its own endpoints), the others keep their static or
    leased address and only the focus's are decided; when one of the others has neither (a lost
    store), every address is decided, as without a focus. `kept`: what the endpoints held at the
    focused pass before (the watch agent's); a pass without a focus forgets it."""
    in_scope = {stack.name for stack in stacks}
    if kept is not None and focus is None:
        kept.forget()
    try:
        return (_assign(IPV4, stacks, leases, observed.live_addresses(), in_scope, focus, kept),
                _assign(IPV6, stacks, leases6, observed.live_addresses6(), in_scope, focus, kept), [])
    except Exhausted as exc:
        stack, container, network = exc.key
        return {}, {}, [Issue(stack, ("containers", container, "networks", network), str(exc))]


def _assign(family: _Family[A], stacks: Sequence[Stack], leases: Mapping[EndpointKey, A],
            live: Mapping[EndpointKey, A], in_scope: set[str], focus: Focus | None,
            kept: HeldAddresses | None) -> dict[EndpointKey, A]:
    if focus is not None:
        held = kept.of(family, stacks, leases) if kept is not None else _held(family, stacks, leases)
        if held.unheld <= focus.containers:  # else a lost store: decided as a whole
            requests = _requests(family, stacks, focus.containers)
            requested = {r.key for r in requests}
            own = Counter(a for key in requested if (a := held.addresses.get(key)) is not None)
            in_use = _InUse(held, own, {a for key, a in live.items()
                                        if key not in requested and key not in held.addresses})
            return held.addresses | assign(requests, leases, live, dict.fromkeys({r.subnet for r in requests}, in_use))
    return _decided(_requests(family, stacks), leases, live, in_scope)


def _decided(requests: list[Request[A]], leases: Mapping[EndpointKey, A], live: Mapping[EndpointKey, A],
             in_scope: set[str]) -> dict[EndpointKey, A]:
    """The requests' addresses: those leased by stacks out of scope, or live on endpoints no
    request names, are in use."""
    requested = {r.key for r in requests}
    held_elsewhere = _leased_elsewhere(leases, in_scope)
    held_elsewhere.update(a for k, a in live.items() if k not in requested)
    # One set for every subnet: an address of another subnet is never handed out in this one
    # anyway (sorting a thousand addresses by subnet cost more than the rest of a focused pass).
    return assign(requests, leases, live, dict.fromkeys({r.subnet for r in requests}, held_elsewhere))


def _leased_elsewhere(leases: Mapping[EndpointKey, A], stacks: Collection[str]) -> set[A]:
    """The addresses leased to stacks other than these."""
    return {a for key, a in leases.items() if key[0] not in stacks}
