"""The shape every controller has: observe (one bulk read), diff (pure), apply (side effects).

The engine observes every controller, diffs each against the same desired state, orders the
changes (creations forward through the controller list, deletions in reverse) and hands each
controller back its own changes, in batches, so a controller can write in bulk (one
`iptables-restore`, one netlink socket)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Generic, Protocol, TypeVar

from controllers.change import Change
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

    def observe(self) -> ObservedT:
        """One bulk read of the live kernel state this controller owns (and what it must avoid)."""
        ...

    def diff(self, desired: Desired, observed: ObservedT) -> Diff:
        """Pure: the changes that take `observed` to `desired`, within `desired.scope`."""
        ...

    def apply(self, changes: Sequence[Change]) -> None:
        """Carry out a batch of this controller's own changes, in the order given."""
        ...
