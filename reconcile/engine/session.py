"""One run against the live kernel: the adapters it holds, the controllers built on them, and
the observe -> address -> diff -> plan -> apply loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from controllers.base import Controller, Desired, EndpointKey, Focus
from controllers.cgroup import CgroupController
from controllers.change import Change
from controllers.container import ContainerController, Gate
from controllers.container_files import RenderedLines
from controllers.errors import ApplyError, ApplyErrors, Held, InterruptedPartway
from controllers.firewall import Backends, FirewallController, backends, kept_backends
from controllers.network import NetworkController
from controllers.proxy import ProxyController
from controllers.sandbox import SandboxController
from kernel import cgroups, netfilter_listeners
from kernel.cgroups_common import CgroupDriver
from kernel.netlink import host_netlink
from kernel.nft_changes import NftChanges
from reconcile.engine import probes
from reconcile.engine.addresses import HeldAddresses, assign_addresses
from reconcile.engine.plan import Plan, order
from reconcile.engine.settings import Settings
from reconcile.engine.snapshot import Controllers, Snapshot
from reconcile.engine.subnets import pooled_subnets, with_subnets
from specs.errors import SpecErrors
from specs.loader import StackFile, locate_issues
from specs.model import Stack
from state.images import ImageStore
from state.ipam import A
from state.store import LeaseCache, Store

K = TypeVar("K", bound=tuple[str, ...])
V = TypeVar("V")

OnApplied = Callable[[Sequence[Change]], None]
"""Told each batch of changes a pass has made (the watch agent logs them)."""


def _unheard(_batch: Sequence[Change]) -> None:
    """No one to tell."""


MAX_PASSES = 3
"""Apply re-plans after each pass: a change can undo what the first observation saw (recreating
a bridge detaches its ports). Three passes converge anything that is not being fought over."""


class NotConverged(Exception):
    """The host kept differing from the spec after MAX_PASSES passes (someone fights us)."""


@dataclass(frozen=True)
class Target:
    """What a run converges: these specs, for these stacks (a stack in scope with no spec is
    torn down)."""

    stacks: Mapping[str, Stack]
    scope: frozenset[str]
    files: Sequence[StackFile] = ()

    @classmethod
    def of_files(cls, files: Sequence[StackFile]) -> Target:
        stacks = {f.stack.name: f.stack for f in files}
        return cls(stacks, frozenset(stacks), files)

    @classmethod
    def teardown(cls, names: Sequence[str]) -> Target:
        return cls({}, frozenset(names))


@dataclass
class Session:
    settings: Settings
    store: Store
    controllers: Controllers
    observed_at: float = 0.0
    """time.monotonic() when the latest observation began: what happened before, it saw."""
    one_pass: Callable[[], AbstractContextManager[None]] = nullcontext
    """Held around one observation of every controller: reads they share are made once."""
    leases: LeaseCache = field(default_factory=LeaseCache)
    """The address leases (a thousand rows), read again only once written: by this session, or
    by another process between two sessions sharing the cache (the watch agent's)."""
    held_addresses: HeldAddresses | None = None
    """What every endpoint holds, kept across sessions with `leases` (the watch agent's): a
    focused pass then decides its own endpoints' addresses without looking at the others'."""
    held: list[Held] = field(default_factory=list)
    """The changes the latest `converge` held back (starts whose dependency's condition is not
    met yet, to a gate that does not wait: the watch agent's), each naming its change."""
    warnings: tuple[str, ...] = ()
    """What the latest `converge` found wrong that no change of its mends: removed containers'
    files that could not be deleted (each run tries again)."""

    def observe(self, focus: Focus | None = None, usage_of: frozenset[str] | None = frozenset()) -> Snapshot:
        """`usage_of`: the stacks whose containers' live usage to read too (None: every
        stack's; `status`)."""
        with self.one_pass(), netfilter_listeners.one_read():
            return self.controllers.observe(focus, usage_of)

    def desired(self, target: Target, observed: Snapshot, focus: Focus | None = None) -> Desired:
        """The desired state of this pass, pooled subnets and container addresses included
        (subnets first: addresses are allocated in them); an exhausted pool or an address
        conflict stops the run like any other spec error."""
        in_scope = [s for s in target.stacks.values() if s.name in target.scope]
        pooled, issues = pooled_subnets(in_scope, self.store.subnet_leases(), observed.networks,
                                        self.settings.subnet_pool)
        if issues:
            raise SpecErrors(locate_issues(target.files, issues))
        stacks = with_subnets(target.stacks, pooled)
        in_scope = [s for s in stacks.values() if s.name in target.scope]
        addresses, addresses6, issues = assign_addresses(in_scope, *self.leases.read(self.store), observed.sandboxes,
                                                         focus, self.held_addresses)
        if issues:
            raise SpecErrors(locate_issues(target.files, issues))
        return Desired(stacks=stacks, scope=target.scope, addresses=addresses, addresses6=addresses6,
                       pooled=pooled, focus=focus)

    def plan(self, target: Target, focus: Focus | None = None) -> tuple[Plan, Desired]:
        """Observe and diff every controller (only what `focus` names, when given); conflicts
        with the host stop the run here, located at the spec field they concern, before
        anything is touched."""
        self.observed_at = time.monotonic()
        observed = self.observe(focus)
        desired = self.desired(target, observed, focus)
        diffs = self.controllers.diff(desired, observed)
        issues = [issue for d in diffs for issue in d.issues]
        if issues:
            raise SpecErrors(locate_issues(target.files, issues))
        return order([d.changes for d in diffs]), desired

    def apply(self, plan: Plan, on_applied: OnApplied = _unheard) -> None:
        """Hand each controller its changes in plan order, batching consecutive ones; a failed
        batch does not stop the others, and every failure is reported together. What each
        batch made is handed to `on_applied` as soon as it has: the whole batch, or the rest
        of it when each failure was one change's alone (otherwise which of its changes were
        made is not known here, and none is handed on). Changes held back are neither made nor
        failed: they join `held`."""
        errors: list[ApplyError] = []
        for controller, batch in self._batches(plan.changes):
            try:
                controller.apply(batch)
            except InterruptedPartway as exc:
                on_applied(exc.made)
                raise
            except ApplyErrors as exc:
                errors += exc.errors
                self.held += exc.held
                if all(error.change is not None for error in exc.errors):
                    not_made = {id(error.change) for error in exc.errors} | {id(held.change) for held in exc.held}
                    if made := [change for change in batch if id(change) not in not_made]:
                        on_applied(made)
            else:
                on_applied(batch)
        if errors:
            raise ApplyErrors(errors)

    def converge(self, target: Target, select: Callable[[Change], bool] = lambda _: True,
                 focus: Focus | None = None, on_applied: OnApplied = _unheard) -> None:
        """Apply until a fresh observation shows nothing left to do. Leases are written before
        the kernel is touched, so a run killed halfway comes back to the same addresses.
        `select` narrows each pass to some of the changes (the watch agent repairs one
        resource, or holds back a restart), and `focus` what each pass observes. `on_applied`
        is handed each batch of changes once made, before the passes that confirm it (and
        whether or not a later batch fails); it must not raise. A caller keeps what it needs
        of them: once applied, a pass's plan is let go before the next pass observes, so the
        confirming observation is made without the first plan held (after starting a thousand
        containers it no longer grows the heap: bench/README, "A pass lets its plan go"). A
        failed pass's plan is kept, to tell a failure that repeats from a race. A change held
        back (`held`) is left out of the later passes: the host is converged but for it.
        What the passes set aside (removed containers' files) is purged in the background once
        they are done, so it takes no CPU from them; what an earlier purge left, before the
        passes of an unfocused convergence (a repair does not wait for it)."""
        left = self.controllers.container.purge_left_behind() if focus is None else None
        self.warnings = () if left is None else (left,)
        try:
            self._converge(target, select, focus, on_applied)
        finally:
            self.controllers.container.purge_set_aside()

    def _converge(self, target: Target, select: Callable[[Change], bool], focus: Focus | None,
                  on_applied: OnApplied) -> None:
        failed: tuple[Plan, ApplyErrors] | None = None
        self.held = []

        held_now: set[tuple[str, str]] = set()  # self.held's changes, as the passes add them

        def unheld(change: Change) -> bool:
            return select(change) and (change.kind, change.key) not in held_now

        for _ in range(MAX_PASSES):
            held_now = self._held_changes()
            plan = self._planned(target, focus).selected(unheld)
            if failed is not None:
                if failed[0] == plan:
                    raise failed[1]  # the same changes against the same host: not a race, a failure
            if plan.empty:
                return
            try:
                self.apply(plan, on_applied)
            except ApplyErrors as exc:
                # Someone may have changed the host between our observation and our write (a
                # veth deleted before its update): the next pass sees the host as it is now.
                failed = (plan, exc)
                continue
            failed = None
            del plan  # the next pass observes without it (see the docstring)
        if failed is not None:
            raise failed[1]
        held_now = self._held_changes()
        left = self.plan(target, focus)[0].selected(unheld)
        if left.empty:
            return
        raise NotConverged("the host still differs from the spec after "
                           f"{MAX_PASSES} passes: " + ", ".join(f"{c.kind} {c.key}" for c in left.changes))

    def _held_changes(self) -> set[tuple[str, str]]:
        """(kind, key) of every change held back so far."""
        return {(h.change.kind, h.change.key) for h in self.held if h.change is not None}

    def _planned(self, target: Target, focus: Focus | None) -> Plan:
        """One pass's plan, its pooled subnets and addresses recorded as leases; the desired
        state goes when this returns (the changes keep what apply needs of it)."""
        plan, desired = self.plan(target, focus)
        if _of(target.scope, self.store.subnet_leases()) != _of(target.scope, desired.pooled):
            self.store.replace_subnet_leases(target.scope, desired.pooled)  # a write costs fsyncs
        self._record_leases(desired)
        return plan

    def _record_leases(self, desired: Desired) -> None:
        """The addresses of this pass become the leases of its stacks. A focused pass decided
        those of its focus only (it did not observe the others' live addresses): every other
        lease stays as it is."""
        leased, leased6 = self.leases.read(self.store)
        addresses, addresses6 = desired.addresses, desired.addresses6
        focus = desired.focus
        if focus is not None:
            decided, decided6 = _decided_inside(addresses, desired, focus), _decided_inside(addresses6, desired, focus)
            if _of_focus(leased, focus) == decided and _of_focus(leased6, focus) == decided6:
                return  # the usual repair: its container keeps its addresses (a write costs fsyncs)
            addresses = _of_focus(leased, focus, inside=False) | decided
            addresses6 = _of_focus(leased6, focus, inside=False) | decided6
        if _of(desired.scope, leased) != _of(desired.scope, addresses) or \
                _of(desired.scope, leased6) != _of(desired.scope, addresses6):  # a write costs fsyncs
            self.store.replace_leases(desired.scope, addresses, addresses6)

    def _batches(self, changes: Sequence[Change]) -> Iterator[tuple[Controller[Any], list[Change]]]:
        by_kind = {kind: c for c in self.controllers.ordered() for kind in c.kinds}
        batch: list[Change] = []
        owner: Controller[Any] | None = None
        for change in changes:
            controller = by_kind[change.kind]
            if controller is not owner and batch:
                assert owner is not None
                yield owner, batch
                batch = []
            owner = controller
            batch.append(change)
        if batch and owner is not None:
            yield owner, batch


def _of(stacks: frozenset[str], leases: Mapping[K, V]) -> dict[K, V]:
    """The leases (of addresses or pooled subnets) of these stacks."""
    return {key: value for key, value in leases.items() if key[0] in stacks}


def _of_focus(leases: Mapping[EndpointKey, A], focus: Focus, inside: bool = True) -> dict[EndpointKey, A]:
    """The leases of the focus's containers, or (`inside=False`) of every other one (one look at
    each lease: a thousand, ~0.1 ms)."""
    return {key: a for key, a in leases.items() if ((key[0], key[1]) in focus.containers) is inside}


def _decided_inside(addresses: Mapping[EndpointKey, A], desired: Desired, focus: Focus) -> dict[EndpointKey, A]:
    """The addresses a focused pass decided: its containers' endpoints', looked up."""
    keys = ((stack, container, network) for stack, container in focus.containers
            for network in desired.stacks[stack].containers[container].networks)
    return {key: addresses[key] for key in keys if key in addresses}


@dataclass(frozen=True)
class HostDrivers:
    """What a session must know of the host besides the state it observes: its cgroup driver,
    and the firewall backend to use (with those to migrate away from). A CLI run detects them
    once; the watch agent keeps them for its focused passes and detects them again on every
    pass over everything (a FORWARD policy turned to DROP since changes `auto`'s choice),
    keeping a firewall backend detected again (see `kept_backends`)."""

    cgroups: CgroupDriver
    firewall: Backends

    @classmethod
    def detect(cls, settings: Settings, nft_changes: NftChanges | None = None,
               before: HostDrivers | None = None) -> HostDrivers:
        """`nft_changes`: what the nftables backend may bring its kept read up to date from;
        `before`: the drivers detected last, whose backends are kept where detected again."""
        firewall = backends(settings.firewall_backend, nft_changes=nft_changes)
        return cls(cgroups.detect(), firewall if before is None else kept_backends(firewall, before.firewall))


@contextmanager
def open_session(settings: Settings, writable: bool, drivers: HostDrivers | None = None,
                 leases: LeaseCache | None = None, rendered: RenderedLines | None = None,
                 held_addresses: HeldAddresses | None = None, gate: Gate | None = None) -> Iterator[Session]:
    """`writable=False` (diff, status) opens the store read-only and never creates it. `leases`,
    `rendered` (/etc/hosts lines) and `held_addresses`: caches kept across sessions (the watch
    agent's). `gate`: how a start meets its depends_on conditions; by default it waits for
    them (probes.Gate, as `apply` does), the watch agent's holds the start instead."""
    store = Store.open(settings.state_dir) if writable else Store.open_readonly(settings.state_dir)
    try:
        with host_netlink() as netlink:
            drivers = drivers or HostDrivers.detect(settings)
            cgroup = CgroupController(drivers.cgroups, settings.cgroup_parent, store)
            yield Session(settings, store, Controllers(
                NetworkController(netlink), SandboxController(netlink), cgroup,
                ContainerController(store, settings.state_dir, cgroup.ensure, ImageStore(settings.state_dir),
                                    gate or probes.Gate(settings), rendered=rendered),
                FirewallController(*drivers.firewall), ProxyController()),
                one_pass=netlink.one_dump, leases=leases if leases is not None else LeaseCache(),
                held_addresses=held_addresses)
    finally:
        store.close()
