"""Published ports, masquerade and isolation: the netfilter rules reconcile owns.

Observe is one read of the whole ruleset (plus the host's listening sockets and route_localnet
flags); diff compares, per owner, the exact rule text the backend prints with the text it
renders for the spec; apply turns every change of a batch into one atomic backend batch. The
rule layout, chain names and comments are in controllers.firewall_rules.

Changes come per owner: `firewall chains` (hooks and the ordered skeleton), `firewall
<stack>/<network>` (masquerade, isolation, accepts, route_localnet), `port
<stack>/<container>/[<ip>:]<port>/<proto>` (one DNAT). Owners of stacks outside the scope are
never touched; rules in our chains without an owner comment are removed with the skeleton's
change (our chains are ours alone).

Two backends (see `backends`): iptables-nft (chains in the shared `nat`/`filter` tables, hooked
from their built-in chains) and nftables (the same chains in one `inet` table of ours, hooked by
base chains of its own). One diff serves both: only the list of our chains differs (the
nftables base chains are ours, iptables' built-in chains are not), and where a rule goes (its
`Dialect`). IPv6 adds no owner and no change kind: an owner's IPv6 rules are more rules of the
same owner, which the iptables backend places in its `ip6 nat`/`ip6 filter` tables (read with
ip6tables-save, written by one ip6tables-restore batch of their own; a rule for both families is
placed in both families' tables) and the nftables one in its inet table beside the IPv4 ones. The backend not in use is
observed too, and whatever of ours it still holds is removed by the same diff run with nothing
wanted (owners in scope, and its skeleton once no owner is left), in the same apply, after the
new backend's batch: switching backends migrates with no moment where a port is unpublished.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from controllers.base import Desired, Diff, Focus
from controllers.change import Action, Change, FieldChange
from controllers.errors import ApplyError, ApplyErrors
from controllers.firewall_conflicts import PublishedPort, conflicts, published_slots
from controllers.firewall_observed import FirewallObservation, Placed, observe_firewall
from controllers.firewall_rules import (
    NFT_LAYOUT,
    SKELETON,
    Owner,
    PortKey,
    network_owner,
    network_rules,
    port_key,
    port_owner,
    port_rules,
    skeleton_rules,
)
from controllers.published import port_targets
from kernel import netfilter, netfilter_conntrack, netfilter_nft
from kernel.netfilter import Backend, Dialect, Family, Op, OpKind, Rule, Ruleset, Runner
from kernel.netfilter_conntrack import FlowFilter
from kernel.netfilter_listeners import read_listeners, with_holders
from kernel.nft_changes import NftChanges
from specs.errors import Issue
from specs.names import CHAIN_FORWARD

if TYPE_CHECKING:
    from specs.model import Container, Stack

KIND_FIREWALL = "firewall"
KIND_PORT = "port"
SKELETON_KEY = "chains"
BACKEND_CHOICES = ("auto", "nftables", "iptables")


@dataclass(frozen=True)
class Work:
    """What apply does for one change; the diff computes it, so apply only carries it out."""

    ops: tuple[Op, ...]
    route_localnet: tuple[tuple[str, str], ...] = ()
    """(bridge, value) pairs to write."""
    flush: tuple[FlowFilter, ...] = ()
    errors: tuple[str, ...] = ()
    """What the change cannot do, reported as errors once the rest of it is done."""
    backend: str = ""
    """The backend the ops are for: "" for the one in use, else one being left behind."""


@dataclass(frozen=True)
class OwnerWant:
    rules: tuple[Placed, ...]
    ipv6: bool = False
    """Some of the rules are IPv6-only (a port published over IPv6 too)."""
    route_localnet: tuple[str, str] | None = None
    """(bridge, "1" or "0"): the owner's bridge is ours, so its route_localnet is ours to set
    either way; one left on after a network turned internal would let containers reach the
    host's 127.0.0.1 without the loopback guard that only non-internal networks get."""


def _placed(dialect: Dialect, rules: Iterable[Rule]) -> tuple[Placed, ...]:
    """Each rule in every table of the backend that holds its family."""
    return tuple(Placed(table, r.chain, dialect.render(r)) for r in rules
                 for table in dialect.tables(r.table, r.family))


def _container_ports(stack: Stack, name: str, container: Container, desired: Desired,
                     dialect: Dialect) -> tuple[dict[Owner, OwnerWant], list[PublishedPort], list[Issue]]:
    """A container's DNAT rules, to its addresses on its default_route network."""
    if not container.ports:
        return {}, [], []
    targets = port_targets(stack, name, container, desired)
    if isinstance(targets, str):
        return {}, [], [Issue(stack.name, ("containers", name, "ports"), targets)]
    wants: dict[Owner, OwnerWant] = {}
    published = []
    for index, mapping in enumerate(container.ports):
        key = port_key(stack.name, name, mapping)
        rules = port_rules(key, targets.address, targets.address6, mapping.container)
        ipv6 = any(rule.family is Family.IPV6 for rule in rules)
        wants[port_owner(key)] = OwnerWant(_placed(dialect, rules), ipv6=ipv6)
        published.append(PublishedPort(key, ("containers", name, "ports", index), ipv6))
    return wants, published, []


def _wanted(desired: Desired, dialect: Dialect
            ) -> tuple[dict[Owner, OwnerWant], list[PublishedPort], list[Issue]]:
    wants: dict[Owner, OwnerWant] = {}
    published: list[PublishedPort] = []
    issues: list[Issue] = []
    for stack in desired.stacks.values():
        if stack.name not in desired.scope:
            continue
        for key, network in stack.networks.items():
            if not desired.network_in_focus(f"{stack.name}/{key}"):
                continue
            wants[network_owner(stack.name, key)] = OwnerWant(
                _placed(dialect, network_rules(stack.name, key, network)),
                route_localnet=(network.bridge, "0" if network.internal else "1"))
        for name in desired.containers_of(stack):
            container = stack.containers[name]
            more_wants, more_published, more_issues = _container_ports(stack, name, container,
                                                                        desired, dialect)
            wants.update(more_wants)
            published += more_published
            issues += more_issues
    return wants, published, issues


def _rule_fields(missing: Sequence[Placed], extra: Sequence[Placed]) -> list[FieldChange]:
    """Old and new rules side by side per chain, so a changed rule reads `old → new`."""
    fields = []
    for chain in dict.fromkeys((p.table, p.chain) for p in [*extra, *missing]):
        olds = [p for p in extra if (p.table, p.chain) == chain]
        news = [p for p in missing if (p.table, p.chain) == chain]
        for i in range(max(len(olds), len(news))):
            old = olds[i].line if i < len(olds) else None
            new = news[i].line if i < len(news) else None
            fields.append(FieldChange(chain[0], old, new))
    return fields


def _multiset_delta(want: Sequence[Placed], have: Sequence[Placed]) -> tuple[list[Placed], list[Placed]]:
    """(missing, extra), duplicates counted: a second copy of one of our rules is extra."""
    if tuple(want) == tuple(have):  # the common case, in sync: skip the counting
        return [], []
    missing = Counter(want) - Counter(have)
    extra = Counter(have) - Counter(want)
    return list(missing.elements()), list(extra.elements())


def _action(wanted: bool, present: bool) -> tuple[Action, str]:
    if not present:
        return Action.CREATE, "not on the host"
    if not wanted:
        return Action.DELETE, "no longer in the spec"
    return Action.UPDATE, "differs from the spec"


def _flush_filters(port: PortKey, action: Action, ipv6: bool) -> tuple[FlowFilter, ...]:
    """Established flows keep their old NAT: drop them when a mapping changes or goes away,
    and for a new UDP mapping (a client may hold an un-NATed entry from before); IPv6 flows
    too when the port is or was published over IPv6."""
    if action is Action.CREATE and port.protocol != "udp":
        return ()
    families = (Family.IPV4, Family.IPV6) if ipv6 else (Family.IPV4,)
    return tuple(FlowFilter(port.protocol, port.host, port.host_ip, family) for family in families)


def _owner_change(owner: Owner, want: OwnerWant | None, have: Sequence[Placed],
                  observed: FirewallObservation) -> Change | None:
    route_localnet = observed.route_localnet
    missing, extra = _multiset_delta(want.rules if want else (), have)
    fields = _rule_fields(missing, extra)
    localnet = want.route_localnet if want else None
    if localnet is not None and route_localnet.get(localnet[0], "0") == localnet[1]:
        localnet = None  # as wanted ("0" for a bridge not made yet: a new link starts with it off)
    if localnet is not None:
        fields.append(FieldChange("route_localnet", route_localnet.get(localnet[0]), localnet[1]))
    if not fields:
        return None
    action, reason = _action(want is not None, bool(have))
    port = PortKey.parse(owner.key) if owner.kind == "port" else None
    ops = ([Op(OpKind.DELETE_RULE, p.table, p.chain, p.spec) for p in extra]
           + [Op(OpKind.APPEND_RULE, p.table, p.chain, p.spec) for p in missing])
    ipv6 = owner in observed.ipv6_owners or (want is not None and want.ipv6)
    work = Work(tuple(ops), route_localnet=(localnet,) if localnet is not None else (),
                flush=_flush_filters(port, action, ipv6) if port else ())
    kind = KIND_PORT if owner.kind == "port" else KIND_FIREWALL
    return Change(action, kind, owner.key, tuple(fields), reason=reason, desired=work)


def _skeleton_change(needed: bool, observed: FirewallObservation, dialect: Dialect) -> Change | None:
    """The chains, the hooks into them, RECONCILE-FORWARD in order; or, when no owner is left,
    all of it removed (hooks first, then every chain flushed and deleted)."""
    have = observed.owned.get(SKELETON, ())
    errors: list[str] = []
    if needed:
        ops, fields = _skeleton_ops(observed, _placed(dialect, skeleton_rules()), have)
        action, reason = (Action.CREATE, "not on the host") if not observed.chains else (
            Action.UPDATE, "differs from the layout")
    else:
        ops, fields, errors = _teardown_ops(observed, have, dialect)
        action, reason = Action.DELETE, "no stack of ours has rules left"
    if not ops:
        return None
    return Change(action, KIND_FIREWALL, SKELETON_KEY, tuple(fields), reason=reason,
                  desired=Work(tuple(ops), errors=tuple(errors)))


def _skeleton_ops(observed: FirewallObservation, want: Sequence[Placed], have: Sequence[Placed]
                  ) -> tuple[list[Op], list[FieldChange]]:
    hooks_want = [p for p in want if p.chain != CHAIN_FORWARD]
    missing, extra = _multiset_delta(hooks_want, [p for p in have if p.chain != CHAIN_FORWARD])
    strays = [p for p in observed.strays if p.chain != CHAIN_FORWARD]
    absent = [(t, c) for t, c in observed.our_chains if (t, c) not in observed.chains]
    # RECONCILE-FORWARD is declared below, by the rewrite its absence triggers.
    ops = [Op(OpKind.DECLARE_CHAIN, t, c) for t, c in absent if c != CHAIN_FORWARD]
    ops += [Op(OpKind.DELETE_RULE, p.table, p.chain, p.spec) for p in extra + strays]
    ops += [Op(OpKind.INSERT_RULE, p.table, p.chain, p.spec) for p in missing]
    fields = [FieldChange("chain", None, f"{t} {c}") for t, c in absent]
    fields += _rule_fields(missing, extra + strays)
    for table in dict.fromkeys(p.table for p in want if p.chain == CHAIN_FORWARD):
        forward_want = [p for p in want if (p.table, p.chain) == (table, CHAIN_FORWARD)]
        forward_have = observed.forward.get(table)
        if forward_have != tuple(p.spec for p in forward_want):
            # Order matters here: rewrite the whole chain (declaring it empties it) in one go.
            ops.append(Op(OpKind.DECLARE_CHAIN, table, CHAIN_FORWARD))
            ops += [Op(OpKind.APPEND_RULE, p.table, p.chain, p.spec) for p in forward_want]
            old = [Placed(table, CHAIN_FORWARD, spec) for spec in forward_have or ()]
            fields += _rule_fields(forward_want, old)
    return ops, fields


def _teardown_ops(observed: FirewallObservation, have: Sequence[Placed], dialect: Dialect
                  ) -> tuple[list[Op], list[FieldChange], list[str]]:
    """The hooks out of the built-in chains, then every chain of ours flushed and deleted
    (whatever is left in them: a stray, or an owner's rule this batch does not delete).

    A chain that a foreign rule jumps to cannot be deleted (the kernel refuses, and would roll
    back the whole table's batch with it) and the rule is not ours to delete: that chain is
    only emptied, everything else goes, and the rule is named in an error (third item)."""
    hooks = [p for p in have if (p.table, p.chain) not in observed.chains]
    chains = [(t, c) for t, c in observed.our_chains if (t, c) in observed.chains]
    ops = [Op(OpKind.DELETE_RULE, p.table, p.chain, p.spec) for p in hooks]
    fields = _rule_fields([], hooks)
    errors: list[str] = []
    for table, chain in chains:
        jumps = observed.foreign_jumps.get((table, chain), ())
        ops.append(Op(OpKind.FLUSH_CHAIN if jumps else OpKind.DELETE_CHAIN, table, chain))
        fields.append(FieldChange("chain", f"{table} {chain}",
                                  f"{table} {chain} (emptied)" if jumps else None))
        if jumps:
            rules = "; ".join(f"`{p.spec}` in chain {dialect.chain_name(p.table, p.chain)}" for p in jumps)
            errors.append(f"chain {dialect.chain_name(table, chain)} was emptied but not deleted: rules that are "
                          f"not reconcile's to delete jump to it ({rules}); delete them and run again")
    return ops, fields, errors


def diff_firewall(desired: Desired, observed: FirewallObservation, dialect: Dialect,
                  other_dialects: Mapping[str, Dialect] | None = None) -> Diff:
    """Pure: per-owner changes that take the observed rules to the desired ones, in scope; then
    the removal of what other backends still hold of the owners in scope (their rules placed
    and rendered by `other_dialects`, by backend name)."""
    wants, published, issues = _wanted(desired, dialect)
    about = observed.owned if desired.focus is None else observed.owners_about(desired.focus)
    in_scope = [o for o in about if o.stack in desired.scope and o not in wants and _in_focus(desired, o)]
    kept = observed.owned_stacks() - desired.scope
    live_ports = {**{p: v6 for left in observed.leftovers.values() for p, v6 in left.live_ports.items()},
                  **observed.live_ports}
    kept_ports = sorted((key for key in live_ports if key.stack not in desired.scope), key=lambda port: port.key)
    issues += conflicts(published, kept_ports, observed.listeners, live_ports)
    changes = []
    for owner in sorted({*wants, *in_scope}, key=lambda o: (o.kind != "network", o.key)):
        change = _owner_change(owner, wants.get(owner), observed.owned.get(owner, ()), observed)
        if change is not None:
            changes.append(change)
    skeleton = _skeleton_change(bool(wants or kept) or _wanted_outside_focus(desired), observed, dialect)
    left_behind = _left_behind(desired, observed, other_dialects or {})
    return Diff(changes=([skeleton] if skeleton else []) + changes + left_behind, issues=issues)


def _wanted_outside_focus(desired: Desired) -> bool:
    """Whether the stacks in scope want rules a focused pass leaves out: every network has some."""
    return desired.focus is not None and any(stack.networks for stack in desired.stacks.values()
                                             if stack.name in desired.scope)


def _in_focus(desired: Desired, owner: Owner) -> bool:
    """The skeleton is in every pass's focus: every stack's rules hang from it."""
    if owner.kind == "port":
        return desired.container_in_focus(owner.key)
    if owner.kind == "network":
        return desired.network_in_focus(owner.key)
    return True


def _left_behind(desired: Desired, observed: FirewallObservation,
                 dialects: Mapping[str, Dialect]) -> list[Change]:
    """The same diff over each other backend's rules, with nothing of the scope wanted there;
    its changes carry the backend's name so apply sends their ops to it."""
    nothing = Desired(stacks={}, scope=desired.scope, focus=desired.focus)
    changes = []
    for name, left in observed.leftovers.items():
        for change in diff_firewall(nothing, left, dialects[name]).changes:
            assert isinstance(change.desired, Work)
            changes.append(replace(change, reason=f"{change.reason} (left by the {name} backend)",
                                   desired=replace(change.desired, backend=name)))
    return changes


Backends = tuple[Backend, tuple[Backend, ...]]
"""The backend to use, and the others to migrate away from (what `backends` returns)."""


def backends(choice: str, run: Runner = subprocess.run,
             open_nft: Callable[[], netfilter_nft.NftSession | None] = netfilter_nft.open_session,
             nft_changes: NftChanges | None = None) -> Backends:
    """(the backend to use, the other one to migrate away from when it is usable here).
    `auto` takes nftables when libnftables works with this kernel, unless the shared iptables
    (or ip6tables) `filter FORWARD` chain has policy DROP: an accept in our own table is not
    final, that policy would drop our forwarded traffic, and only the iptables backend (whose
    hook sits inside that chain) can accept it there. iptables-nft otherwise. `nft_changes`:
    the notifications of our table, when the caller follows them (the watch agent)."""
    if choice not in BACKEND_CHOICES:
        raise netfilter.NetfilterError(f"unknown firewall backend {choice!r}: expected one of "
                                       f"{', '.join(BACKEND_CHOICES)}")
    session = open_nft()
    if choice == "nftables" and session is None:
        raise netfilter.NetfilterError("the nftables backend needs libnftables and its Python binding "
                                       "(packages libnftables1 and python3-nftables) and a kernel with nf_tables")
    try:
        iptables: netfilter.IptablesNft | None = netfilter.detect(run)
    except netfilter.NetfilterError:
        iptables = None
    nft: tuple[Backend, ...] = (netfilter_nft.Nftables(NFT_LAYOUT, session, nft_changes),) if session else ()
    if choice == "nftables" or (choice == "auto" and nft and not (iptables and iptables.forward_drops())):
        # no usable iptables: nothing of it to migrate
        return nft[0], (iptables,) if iptables else ()
    return iptables or netfilter.detect(run), nft


def kept_backends(detected: Backends, before: Backends) -> Backends:
    """`detected` (a fresh `backends`), each backend in it replaced by the instance of the same
    class `before` holds, in either place (`auto` may have swapped them), with the read it
    keeps; one `before` holds and `detected` does not (no longer usable here) is let go. What a
    backend is built from (our table's layout, the process's libnftables session, the one
    ledger of notifications a caller follows) is the same for the whole process, so the class
    is its identity."""
    held = {type(backend): backend for backend in (before[0], *before[1])}

    def kept(backend: Backend) -> Backend:
        return held.get(type(backend), backend)

    return kept(detected[0]), tuple(kept(other) for other in detected[1])


def nft_changes() -> NftChanges:
    """The ledger of our nftables table's notifications, for whoever follows them (the watch
    agent feeds it from its event loop and hands it to `backends`)."""
    return NftChanges(NFT_LAYOUT.table)


class FirewallController:
    """Controller protocol over a netfilter backend (see `backends`), and the backends it
    migrates away from."""

    kinds = (KIND_FIREWALL, KIND_PORT)

    def __init__(self, backend: Backend, others: Sequence[Backend] = ()):
        self._backend = backend
        self._others = {other.name: other for other in others}

    @classmethod
    def for_host(cls, choice: str = "auto") -> FirewallController:
        backend, others = backends(choice)
        return cls(backend, others)

    def observe(self, focus: Focus | None = None) -> FirewallObservation:
        """With a focus, the other backends are not read: what they still hold of ours is
        migrated by a whole pass (every apply, and the agent's first and host-wide ones).
        Without one, a backend's read derived since its last whole listing is listed again: a
        pass over everything checks what earlier passes derived."""
        leftovers = {}
        if focus is None:
            for backend in (self._backend, *self._others.values()):
                backend.drop_derived_read()
            for name, other in self._others.items():
                left = observe_firewall(other.observe(), (), {}, other)
                if left.owned or left.chains:
                    leftovers[name] = left
        observed = observe_firewall(self._backend.observe(), read_listeners(),
                                    netfilter.read_route_localnet(focus.links if focus else None), self._backend)
        # Who holds a listener is a walk of every fd on the host: only for those `status` names
        # (intruders, on a port our rules publish), and `diff` for those a conflict names.
        live = {(port.protocol, port.host) for port in observed.live_ports}
        return replace(observed, leftovers=leftovers, listeners=with_holders(observed.listeners, live))

    def diff(self, desired: Desired, observed: FirewallObservation) -> Diff:
        listeners = with_holders(observed.listeners, published_slots(desired))
        return diff_firewall(desired, replace(observed, listeners=listeners), self._backend, self._others)

    def apply(self, changes: Sequence[Change]) -> None:
        """One batch for every change given, per backend (per family on iptables: see
        Backend.batches): the one in use first (the new rules are in before another backend's
        old ones go); then route_localnet and conntrack, which only make sense once the rules
        are in."""
        works = [c.desired for c in changes if isinstance(c.desired, Work)]
        errors: list[ApplyError] = []
        try:
            for name in dict.fromkeys(["", *(work.backend for work in works)]):
                backend = self._others[name] if name else self._backend
                self._apply_ops(backend, [op for work in works if work.backend == name for op in work.ops])
        except netfilter.NetfilterError as exc:
            keys = ", ".join(f"{c.kind} {c.key}" for c in changes)
            raise ApplyErrors([ApplyError(f"{keys}: {exc}")]) from exc
        for bridge, value in dict.fromkeys(pair for work in works for pair in work.route_localnet):
            try:
                netfilter.set_route_localnet(bridge, value)
            except OSError as exc:
                errors.append(ApplyError(f"route_localnet on {bridge}: {exc}"))
        try:
            netfilter_conntrack.flush([f for work in works for f in work.flush])
        except netfilter.NetfilterError as exc:
            errors.append(ApplyError(f"conntrack: {exc}"))
        errors += [ApplyError(message) for work in works for message in work.errors]
        if errors:
            raise ApplyErrors(errors)

    @staticmethod
    def _apply_ops(backend: Backend, ops: Sequence[Op]) -> None:
        """The backend's batches (one per family for iptables), in order."""
        for batch in backend.batches(ops):
            FirewallController._apply_batch(backend, batch)

    @staticmethod
    def _apply_batch(backend: Backend, ops: Sequence[Op]) -> None:
        """One batch. The kernel refuses a whole table's batch for one `-D` of a rule that is
        not there: when someone else removed rules or chains of ours after we observed, those
        deletions are done already, so they are dropped and the rest is sent once more. Any
        other refusal stands."""
        try:
            backend.apply(ops)
        except netfilter.NetfilterError:
            ruleset = backend.observe()
            left = [op for op in ops if not _already_done(op, ruleset)]
            if len(left) == len(ops):
                raise
            backend.apply(left)


def _already_done(op: Op, ruleset: Ruleset) -> bool:
    chain = ruleset.chain(op.table, op.chain)
    if op.kind is OpKind.DELETE_RULE:
        return chain is None or op.spec not in chain.rules
    return op.kind in (OpKind.DELETE_CHAIN, OpKind.FLUSH_CHAIN) and chain is None
