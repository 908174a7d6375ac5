"""Container addresses for a pass: IPAM fed from the store's leases and the live kernel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network

from controllers.sandbox import SandboxObservation
from specs.errors import Issue
from specs.model import Stack
from state.ipam import EndpointKey, Exhausted, Request, assign


def requests_of(stacks: Sequence[Stack]) -> list[Request]:
    return [Request(key=(stack.name, c_key, n_key), subnet=stack.networks[n_key].subnet,
                    gateway=stack.networks[n_key].gateway, static=attachment.ip)
            for stack in stacks for c_key, container in stack.containers.items()
            for n_key, attachment in container.networks.items()]


def assign_addresses(stacks: Sequence[Stack], leases: Mapping[EndpointKey, IPv4Address],
                     observed: SandboxObservation) -> tuple[dict[EndpointKey, IPv4Address], list[Issue]]:
    requests = requests_of(stacks)
    requested = {r.key for r in requests}
    live = observed.live_addresses()
    in_use: dict[IPv4Network, set[IPv4Address]] = {}
    in_scope = {stack.name for stack in stacks}
    held_elsewhere = [a for k, a in leases.items() if k[0] not in in_scope]
    held_elsewhere += [a for k, a in live.items() if k not in requested]
    for subnet in {r.subnet for r in requests}:
        in_use[subnet] = {a for a in held_elsewhere if a in subnet}
    try:
        return assign(requests, leases, live, in_use), []
    except Exhausted as exc:
        stack, container, network = exc.key
        return {}, [Issue(stack, ("containers", container, "networks", network), str(exc))]
