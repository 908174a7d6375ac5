"""The shape every controller has: observe (one bulk read), diff (pure), apply (side effects).

The engine observes every controller, diffs each against the same desired state, orders the
changes (creations forward through the controller list, deletions in reverse) and hands each
controller back its own changes, in batches, so a controller can write in bulk (one
`iptables-restore`, one netlink socket)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Generic, Protocol, TypeVar

from controllers.change import Change
from specs import names
from specs.errors import Issue
from specs.model import Stack


class Observation(Protocol):
    def owned_stacks(self) -> set[str]:
        """Stacks that own at least one of the observed objects (read from the kernel marks)."""
        ...


ObservedT = TypeVar("ObservedT", bound=Observation)

EndpointKey = tuple[str, str, str]
"""(stack, container, network)."""


@dataclass(frozen=True)
class Focus:
    """A pass about some containers only (the watch agent repairing one): each controller
    observes only their objects and the networks they join, and each diff leaves every other
    object out, neither creating nor pruning it. A diff given the whole host's observation and a
    focus makes exactly the full diff's changes about the focus."""

    containers: frozenset[tuple[str, str]]
    """(stack, container)."""
    networks: frozenset[tuple[str, str]]
    """(stack, network): the networks those containers join in the spec."""
    links: frozenset[str] = frozenset()
    """The host's links of both: the networks' bridges and the endpoints' host ends, by name."""

    @classmethod
    def on(cls, stacks: Mapping[str, Stack], containers: Iterable[tuple[str, str]]) -> Focus | None:
        """The focus on these containers of the specs; None when one of them is in none (what
        is left of a removed container is found only by a pass over everything: the host ends
        of its veths are named after networks the spec no longer says)."""
        chosen = frozenset(containers)
        if any(stack not in stacks or container not in stacks[stack].containers for stack, container in chosen):
            return None
        joined = frozenset((stack, network, container) for stack, container in chosen
                           for network in stacks[stack].containers[container].networks)
        links = {stacks[stack].networks[network].bridge for stack, network, _ in joined}
        links |= {names.veth_host_name(stack, container, network) for stack, network, container in joined}
        return cls(chosen, frozenset((stack, network) for stack, network, _ in joined), frozenset(links))

    def has_container(self, key: str) -> bool:
        """Whether the container object keyed `stack/container[/...]` (a sandbox, endpoint,
        cgroup, process, published port or proxy) is in focus."""
        return _pair(key) in self.containers

    def has_network(self, key: str) -> bool:
        """Whether the network object keyed `stack/network` (a bridge, its rules) is in focus."""
        return _pair(key) in self.networks


def containers_among(stack: Stack, chosen: Collection[tuple[str, str]] | None) -> list[str]:
    """The keys of the stack's containers among the `chosen` (stack, container) pairs (every
    one for None), in the spec's order: a focused pass's few are looked up, not looked for
    among a thousand."""
    if chosen is None:
        return list(stack.containers)
    keys = [key for name, key in chosen if name == stack.name and key in stack.containers]
    if len(keys) < 2:
        return keys
    position = {key: index for index, key in enumerate(stack.containers)}
    return sorted(keys, key=position.__getitem__)


def _pair(key: str) -> tuple[str, str]:
    stack, _, rest = key.partition("/")
    return stack, rest.split("/", 1)[0]


@dataclass(frozen=True)
class Desired:
    """What the host should look like for the stacks in scope."""

    stacks: Mapping[str, Stack]
    """The validated specs to converge to, by stack name (empty for `down`)."""
    scope: frozenset[str]
    """Stacks this run manages: objects of ours outside the scope are left alone, objects of ours
    inside it that the specs do not name are pruned."""
    addresses: Mapping[EndpointKey, IPv4Address] = field(default_factory=dict)
    """Container addresses decided by IPAM (static or sticky-allocated)."""
    addresses6: Mapping[EndpointKey, IPv6Address] = field(default_factory=dict)
    """IPv6 addresses of the endpoints on dual-stack networks (those with a subnet6), decided as
    `addresses` are."""
    pooled: Mapping[tuple[str, str], IPv4Network] = field(default_factory=dict)
    """Subnets of networks declared without one, from the pool, by (stack, network); `stacks`
    already carries them."""
    focus: Focus | None = None
    """Only these objects are diffed; None for all of them."""

    def containers_of(self, stack: Stack) -> list[str]:
        """The keys of the stack's containers this pass diffs, in the spec's order (each
        controller asks)."""
        return containers_among(stack, None if self.focus is None else self.focus.containers)

    def container_in_focus(self, key: str) -> bool:
        """Whether this pass diffs the container object keyed `stack/container[/...]`."""
        return self.focus is None or self.focus.has_container(key)

    def network_in_focus(self, key: str) -> bool:
        """Whether this pass diffs the network object keyed `stack/network`."""
        return self.focus is None or self.focus.has_network(key)


@dataclass
class Diff:
    changes: list[Change] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    """Conflicts with the live host (a foreign link holding our name, ...): they stop the run
    before any change is made, and are reported at the spec field they concern."""


class Controller(Protocol, Generic[ObservedT]):
    @property
    def kinds(self) -> tuple[str, ...]:
        """The change kinds this controller emits and applies."""
        ...

    def observe(self, focus: Focus | None = None) -> ObservedT:
        """One bulk read of the live kernel state this controller owns (and what it must avoid);
        with a focus, it may leave out what is not about it."""
        ...

    def diff(self, desired: Desired, observed: ObservedT) -> Diff:
        """Pure: the changes that take `observed` to `desired`, within `desired.scope`."""
        ...

    def apply(self, changes: Sequence[Change]) -> None:
        """Carry out a batch of this controller's own changes, in the order given."""
        ...
