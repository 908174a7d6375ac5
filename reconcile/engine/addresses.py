"""Container addresses for a pass: IPAM fed from the store's leases and the live kernel, once
per family (IPv6 only for the endpoints on dual-stack networks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address

from controllers.base import Focus
from controllers.sandbox import SandboxObservation
from specs.errors import Issue
from specs.model import Stack
from state.ipam import A, EndpointKey, Exhausted, Request, assign


def requests_of(stacks: Sequence[Stack]) -> list[Request[IPv4Address]]:
    requests: list[Request[IPv4Address]] = []
    for stack in stacks:
        nets = {key: (net.assigned_subnet, net.assigned_gateway) for key, net in stack.networks.items()}
        requests += [Request((stack.name, c_key, n_key), *nets[n_key], attachment.ip)
                     for c_key, container in stack.containers.items()
                     for n_key, attachment in container.networks.items()]
    return requests


def requests6_of(stacks: Sequence[Stack]) -> list[Request[IPv6Address]]:
    """Endpoints on dual-stack networks only (gateway6 is set whenever subnet6 is)."""
    requests: list[Request[IPv6Address]] = []
    for stack in stacks:
        nets = {key: (net.subnet6, net.gateway6) for key, net in stack.networks.items()
                if net.subnet6 is not None and net.gateway6 is not None}
        if nets:  # most stacks are IPv4 only: their endpoints are not even looked at
            requests += [Request((stack.name, c_key, n_key), *nets[n_key], attachment.ip6)
                         for c_key, container in stack.containers.items()
                         for n_key, attachment in container.networks.items() if n_key in nets]
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
        return (_assign(requests_of(stacks), leases, observed.live_addresses(), in_scope, focus),
                _assign(requests6_of(stacks), leases6, observed.live_addresses6(), in_scope, focus), [])
    except Exhausted as exc:
        stack, container, network = exc.key
        return {}, {}, [Issue(stack, ("containers", container, "networks", network), str(exc))]


def _assign(requests: list[Request[A]], leases: Mapping[EndpointKey, A], live: Mapping[EndpointKey, A],
            in_scope: set[str], focus: Focus | None) -> dict[EndpointKey, A]:
    """One family: addresses leased by stacks out of scope, or live on endpoints no request
    names, are in use."""
    if focus is not None:
        kept = {r.key: r.static or leases.get(r.key) for r in requests if (r.key[0], r.key[1]) not in focus.containers}
        if all(kept.values()):
            held = {k: a for k, a in kept.items() if a is not None}
            decided = _assign([r for r in requests if r.key not in held], leases, {**live, **held}, in_scope, None)
            return {r.key: held[r.key] if r.key in held else decided[r.key] for r in requests}
    requested = {r.key for r in requests}
    held_elsewhere = {a for k, a in leases.items() if k[0] not in in_scope}
    held_elsewhere.update(a for k, a in live.items() if k not in requested)
    # One set for every subnet: an address of another subnet is never handed out in this one
    # anyway (sorting a thousand addresses by subnet cost more than the rest of a focused pass).
    return assign(requests, leases, live, dict.fromkeys({r.subnet for r in requests}, held_elsewhere))
