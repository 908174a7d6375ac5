"""Subnets for a pass: networks declared without one get theirs from the pool, fed from the
store's subnet leases and the live kernel (its routes, addresses and our bridges)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network

from controllers.network import NetworkObservation
from specs.errors import Issue
from specs.model import Stack
from state.subnets import NetworkKey, PoolExhausted, SubnetPool, SubnetRequest, allocate_subnets


def pooled_subnets(stacks: Sequence[Stack], leases: Mapping[NetworkKey, IPv4Network],
                   observed: NetworkObservation, pool: SubnetPool) -> tuple[dict[NetworkKey, IPv4Network], list[Issue]]:
    """A subnet for each network of `stacks` (the stacks in scope) declared without one.

    Taken: the host's addresses and routes on links not ours (for a new subnet only: a sticky
    one the host overlaps stays, and the host check reports it), every declared subnet, our
    other stacks' bridges and leases. Bridges of the stacks in scope are ours to change: only
    the one of the network itself counts, as its sticky subnet."""
    in_scope = {stack.name for stack in stacks}
    live = {(net.stack, net.network): net.subnet for net in observed.applied()}
    requests = [SubnetRequest((stack.name, key), tuple(s for s in (leases.get((stack.name, key)),
                                                                   live.get((stack.name, key))) if s))
                for stack in stacks for key, network in stack.networks.items() if network.subnet is None]
    host = [net.network for net in observed.foreign_nets
            if isinstance(net.network, IPv4Network) and net.network.prefixlen > 0]  # the pool is IPv4
    ours = [n.subnet for stack in stacks for n in stack.networks.values() if n.subnet is not None]
    ours += [subnet for key, subnet in live.items() if key[0] not in in_scope]
    ours += [subnet for key, subnet in leases.items() if key[0] not in in_scope]
    try:
        return allocate_subnets(requests, pool, ours, host), []
    except PoolExhausted as exc:
        stack, network = exc.key
        return {}, [Issue(stack, ("networks", network), str(exc))]


def with_subnets(stacks: Mapping[str, Stack], subnets: Mapping[NetworkKey, IPv4Network]) -> dict[str, Stack]:
    """The stacks with their pooled subnets (and so gateways) filled in, as every controller
    reads them."""
    resolved = dict(stacks)
    for (name, key), subnet in subnets.items():
        stack = resolved[name]
        networks = {**stack.networks, key: stack.networks[key].with_subnet(subnet)}
        resolved[name] = stack.model_copy(update={"networks": networks})
    return resolved
