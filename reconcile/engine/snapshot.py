"""A session's controllers and one pass's observation of the host, by name: what reads a pass
(the plan, `status`, the watch agent) asks for the field it needs, and each diff is handed the
observation of its own controller, checked by the type checker rather than by position."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from controllers.base import Controller, Desired, Diff, Focus, Observation
from controllers.cgroup import CgroupController, CgroupObservation
from controllers.container import ContainerController, ContainerObservation
from controllers.firewall import FirewallController
from controllers.firewall_observed import FirewallObservation
from controllers.network import NetworkController, NetworkObservation
from controllers.proxy import ProxyController, ProxyObservation
from controllers.sandbox import SandboxController, SandboxObservation
from kernel.beside import beside, may_fork

FORK_FROM = 64
"""Sandboxes from which a whole pass observes beside the rest: a sandbox's dump costs ~0.2 ms,
the two children ~5-10 ms between them (fork, pickling, exit); at ten sandboxes they made a
`diff` ~10 ms slower."""


@dataclass(frozen=True)
class Snapshot:
    """Everything one pass observed, frozen: a diff never reads the kernel again."""

    networks: NetworkObservation
    sandboxes: SandboxObservation
    cgroups: CgroupObservation
    containers: ContainerObservation
    firewall: FirewallObservation
    proxies: ProxyObservation

    def ordered(self) -> tuple[Observation, ...]:
        """Every controller's observation."""
        return self.networks, self.sandboxes, self.cgroups, self.containers, self.firewall, self.proxies

    def owned_stacks(self) -> set[str]:
        """Stacks that own at least one observed object (read from the kernel marks)."""
        return set().union(*(observed.owned_stacks() for observed in self.ordered()))


@dataclass(frozen=True)
class Controllers:
    """One per resource kind, in dependency order: bridges, then the cgroups with their limits,
    then sandboxes and their veths, then the processes in them; rules are written last
    (route_localnet needs the bridges) but for the [::1] proxies of published ports, and, in a
    teardown, removed first (after the proxies). Plans create forward through this order and
    delete backward. Cgroups and sandboxes do not depend on each other; the sandboxes come
    second in a teardown because the kernel then tears their namespaces down in a worker of its
    own (~1 s for a thousand, under the rtnl lock) while the cgroups are removed, where it kept
    the bridge's deletion waiting after them (`down` of 1,000: bench/README)."""

    network: NetworkController
    sandbox: SandboxController
    cgroup: CgroupController
    container: ContainerController
    firewall: FirewallController
    proxy: ProxyController

    def ordered(self) -> tuple[Controller[Any], ...]:
        return self.network, self.cgroup, self.sandbox, self.container, self.firewall, self.proxy

    def observe(self, focus: Focus | None = None, usage_of: frozenset[str] | None = frozenset()) -> Snapshot:
        """A whole pass over many sandboxes observes them and the cgroups each in a child, beside
        the rest (kernel.beside): at a thousand containers ~0.2 s, ~0.07 s (~0.17 s with the
        usage) and ~0.2 s. The child's sandboxes come from a host dump of its own, so such a
        pass dumps the host's links twice (at once, on two cores). A focused pass, a host with
        fewer than FORK_FROM sandboxes, or a process with threads (the watch agent) observes in
        turn, through the session's socket and its one dump a pass. `usage_of`: the stacks
        whose containers' live usage to read too (None: every stack's; `status`)."""
        if focus is not None or not may_fork() or self.sandbox.count() < FORK_FROM:
            return Snapshot(self.network.observe(focus), self.sandbox.observe(focus),
                            self.cgroup.observe(focus, usage_of), self.container.observe(focus),
                            self.firewall.observe(focus), self.proxy.observe(focus))
        with beside(self.sandbox.observe_apart, here=self.sandbox.observe) as sandboxes, \
                beside(partial(self.cgroup.observe, usage_of=usage_of)) as cgroups:
            networks, containers = self.network.observe(), self.container.observe()
            firewall, proxies = self.firewall.observe(), self.proxy.observe()
            return Snapshot(networks, sandboxes.result(), cgroups.result(), containers, firewall, proxies)

    def diff(self, desired: Desired, snapshot: Snapshot) -> list[Diff]:
        """Every controller's diff of its own observation, in dependency order."""
        return [self.network.diff(desired, snapshot.networks), self.cgroup.diff(desired, snapshot.cgroups),
                self.sandbox.diff(desired, snapshot.sandboxes), self.container.diff(desired, snapshot.containers),
                self.firewall.diff(desired, snapshot.firewall), self.proxy.diff(desired, snapshot.proxies)]
