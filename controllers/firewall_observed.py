"""Our rules as the firewall controller sees them: one read of a backend's rules (a Ruleset),
sorted by owner (the rule's comment), with the strays in our chains and the foreign rules that
jump into them.

A read is sorted once: the backend hands the same read out while nothing changed. A read that
is the backend's last one with a few rules deleted and nothing else (someone's `nft delete
rule`, played into the kept read from nf_tables' notifications; our own batch of deletions) is
derived from the last sorting by taking those rules out: a deleted DNAT rule's repair beside a
thousand containers sorted our ~1,020 rules (the DNAT chain's 1,000 among them) anew for the one
gone, ~2 ms on an idle host and ~5 ms in the agent under load, the largest share of ours that
grew with N in that repair (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from weakref import WeakKeyDictionary

from controllers.base import Focus
from controllers.firewall_conflicts import Intruder, intruders
from controllers.firewall_rules import SKELETON, Owner, PortKey, owner_of_spec
from kernel.netfilter import Backend, Family, Ruleset
from kernel.netfilter_listeners import Listener
from specs.names import CHAIN_FORWARD, OUR_CHAINS


@dataclass(frozen=True, slots=True)
class Placed:
    """A rule where it sits: table, chain and the spec text as the backend prints it."""

    table: str
    chain: str
    spec: str

    @property
    def line(self) -> str:
        return f"-A {self.chain} {self.spec}"


@dataclass(frozen=True)
class FirewallObservation:
    owned: Mapping[Owner, tuple[Placed, ...]]
    """Every rule carrying one of our comments, wherever it sits, by owner."""
    strays: tuple[Placed, ...]
    """Rules in our chains without an owner comment (someone added them by hand)."""
    chains: frozenset[tuple[str, str]]
    """Those of our chains that exist."""
    forward: Mapping[str, tuple[str, ...]]
    """RECONCILE-FORWARD of each table holding one, in kernel order (its order matters)."""
    listeners: tuple[Listener, ...]
    route_localnet: Mapping[str, str]
    foreign_jumps: Mapping[tuple[str, str], tuple[Placed, ...]] = field(default_factory=dict)
    """Rules not ours, outside our chains, that jump to one of our chains, by (table, chain):
    the kernel refuses to delete a chain still jumped to, and those rules are not ours to delete."""
    our_chains: tuple[tuple[str, str], ...] = OUR_CHAINS
    """Every chain the backend's layout owns, in creation order (its base chains first)."""
    leftovers: Mapping[str, FirewallObservation] = field(default_factory=dict)
    """What backends other than the one in use still hold of ours, by backend name."""
    ipv6_owners: frozenset[Owner] = frozenset()
    """Owners with an IPv6-only rule (a port published over IPv6 too)."""
    live_ports: Mapping[PortKey, bool] = field(default_factory=dict)
    """The ports our DNAT rules publish now, parsed back from their owners, in rule order:
    True for one published over IPv6 too."""
    by_name: Mapping[tuple[str, str], tuple[Owner, ...]] = field(default_factory=dict)
    """The owners other than the skeleton by (stack, network or container): a focused diff
    looks at its own, not at a thousand containers' ports."""

    def owned_stacks(self) -> set[str]:
        return {stack for stack, _ in self.by_name}

    def owners_about(self, focus: Focus) -> list[Owner]:
        """The owners a focused pass may concern: the skeleton, and those named like one of its
        containers or networks (each still to be told apart by its kind)."""
        named = [owner for pair in focus.containers | focus.networks for owner in self.by_name.get(pair, ())]
        return [SKELETON, *named] if SKELETON in self.owned else named

    def intruders(self) -> list[Intruder]:
        """Host processes listening on a port we publish (they bound it after us)."""
        return intruders(self.live_ports, self.listeners)


def our_chains(backend: Backend) -> tuple[tuple[str, str], ...]:
    """Every chain of ours in the backend's tables (both families'), its base chains first."""
    return (*((base.table, base.name) for base in backend.base_chains),
            *((table, chain) for logical, chain in OUR_CHAINS for table in backend.tables(logical, Family.BOTH)))


def observe_firewall(ruleset: Ruleset, listeners: tuple[Listener, ...],
                     route_localnet: Mapping[str, str], backend: Backend) -> FirewallObservation:
    """Sort one ruleset read of `backend` into ours (by comment) and the strays in our chains."""
    return replace(_sorted(ruleset, backend), listeners=listeners, route_localnet=route_localnet)


_LAST_SORTED: WeakKeyDictionary[Backend, tuple[Ruleset, FirewallObservation]] = WeakKeyDictionary()
"""Each backend's last read and its sorting (the backend in use, and another one a pass over
everything reads first: what it still holds of ours), for as long as the backend lives."""

MAX_DELETED = 64
"""Rules deleted since the last read beyond which the read is sorted anew (a chain flushed)."""


def _sorted(ruleset: Ruleset, backend: Backend) -> FirewallObservation:
    """By the read's identity: a backend hands the same read out again while nf_tables has
    committed nothing (the watch agent's passes), and 3,000 rules took ~10% of a repair to sort
    at a thousand containers. A read that is the last one with rules deleted is derived from
    its sorting (see the module's docstring)."""
    last = _LAST_SORTED.get(backend)
    if last is not None and last[0] is ruleset:
        return last[1]
    derived = None if last is None else _after_deletions(*last, ruleset, backend)
    observed = derived if derived is not None else sorted_anew(ruleset, backend)
    _LAST_SORTED[backend] = (ruleset, observed)
    return observed


def sorted_anew(ruleset: Ruleset, backend: Backend) -> FirewallObservation:
    """Every rule of the read, in its order, sorted by its comment and where it sits."""
    ours = our_chains(backend)
    existing = frozenset(tc for tc in ours if ruleset.chain(*tc) is not None)
    owned: dict[Owner, list[Placed]] = {}
    strays: list[Placed] = []
    foreign_jumps: dict[tuple[str, str], list[Placed]] = {}
    forward: dict[str, tuple[str, ...]] = {}
    ipv6_owners: set[Owner] = set()
    for table, chains in ruleset.tables.items():
        for chain in chains.values():
            if chain.name == CHAIN_FORWARD and (table, chain.name) in existing:
                forward[table] = chain.rules  # kept whole: the skeleton rewrites it as one
                continue
            for spec in chain.rules:
                placed = Placed(table, chain.name, spec)
                owner = owner_of_spec(spec)
                if owner is not None:
                    owned.setdefault(owner, []).append(placed)
                    if backend.is_ipv6(table, spec):
                        ipv6_owners.add(owner)
                elif (table, chain.name) in existing:
                    strays.append(placed)
                else:
                    for target in backend.jump_targets(table, spec):
                        if target in ours:
                            foreign_jumps.setdefault(target, []).append(placed)
    by_name: dict[tuple[str, str], list[Owner]] = {}
    for owner in owned:
        if (named := _named(owner)) is not None:
            by_name.setdefault(named, []).append(owner)
    return FirewallObservation(
        owned={owner: tuple(rules) for owner, rules in owned.items()}, strays=tuple(strays),
        chains=existing, forward=forward, listeners=(), route_localnet={},
        foreign_jumps={chain: tuple(rules) for chain, rules in foreign_jumps.items()}, our_chains=ours,
        ipv6_owners=frozenset(ipv6_owners),
        live_ports={key: owner in ipv6_owners for owner in owned if owner.kind == "port"
                    for key in [PortKey.parse(owner.key)] if key},
        by_name={pair: tuple(owners) for pair, owners in by_name.items()})


def _after_deletions(before: Ruleset, observed: FirewallObservation, after: Ruleset,
                     backend: Backend) -> FirewallObservation | None:
    """`observed` (the sorting of `before`) without the rules `after` lacks, when `after` is
    `before` with a few rules deleted and nothing else changed (the same chains, in the same
    order, each either the same object or its rules with some left out); else None. Equal to
    sorting `after` anew (tests/test_firewall_observed.py holds them to it), but for the order
    of the owners and ports as keys of `owned` and `live_ports`: an owner whose first rule is
    gone keeps its place there, and whoever reads them sorts them (the diff its owners and
    the ports of stacks outside its scope, `intruders` its ports)."""
    if list(after.tables) != list(before.tables):
        return None
    deleted: list[tuple[Placed, int]] = []
    for table, chains in after.tables.items():
        chains_before = before.tables[table]
        if list(chains) != list(chains_before):
            return None
        for name, chain in chains.items():
            if chain is chains_before[name]:
                continue
            if chain.name != name or chains_before[name].name != name:
                return None  # a chain filed under another name: not a read a backend makes
            gone = _deleted(chains_before[name].rules, chain.rules)
            if gone is None or len(deleted) + len(gone) > MAX_DELETED:
                return None
            deleted += ((Placed(table, chain.name, spec), nth) for spec, nth in gone)
    try:
        return _without(observed, deleted, after, backend)
    except (KeyError, IndexError, ValueError):  # not where the sorting put it: not made from `before`
        return None


def _deleted(before: tuple[str, ...], after: tuple[str, ...]) -> list[tuple[str, int]] | None:
    """The rules of `before` that `after` lacks, each with which of the rules of its text in
    `before` it is (0 for the first), when `after` is `before` with some left out (in the same
    order); else None."""
    gone: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    kept = 0
    for rule in before:
        nth = seen[rule] = seen.get(rule, -1) + 1
        if kept < len(after) and after[kept] == rule:
            kept += 1
        else:
            gone.append((rule, nth))
    return gone if kept == len(after) else None


def _without(observed: FirewallObservation, deleted: Sequence[tuple[Placed, int]], after: Ruleset,
             backend: Backend) -> FirewallObservation | None:
    """The sorting with these rules taken out of wherever it had put each; None where an
    owner touched reads as the same port as another (a comment written unlike ours, `80` and
    `080`): which of them a live port is read from depends on the whole read's order."""
    if not deleted:
        return observed
    owned = dict(observed.owned)
    strays = observed.strays
    foreign_jumps = dict(observed.foreign_jumps)
    forward = dict(observed.forward)
    touched: dict[Owner, None] = {}
    for placed, nth in sorted(deleted, key=lambda gone: -gone[1]):  # the later of equal rules first
        where = (placed.table, placed.chain)
        owner = owner_of_spec(placed.spec)
        if placed.chain == CHAIN_FORWARD and where in observed.chains:
            forward[placed.table] = after.tables[placed.table][CHAIN_FORWARD].rules
        elif owner is not None:
            owned[owner] = _one_less(owned[owner], placed, nth)
            touched[owner] = None
        elif where in observed.chains:
            strays = _one_less(strays, placed, nth)
        else:
            for target in backend.jump_targets(placed.table, placed.spec):
                if target in observed.our_chains:
                    foreign_jumps[target] = _one_less(foreign_jumps[target], placed, nth)
                    if not foreign_jumps[target]:
                        del foreign_jumps[target]
    ipv6_owners = set(observed.ipv6_owners)
    live_ports = dict(observed.live_ports)
    by_name = dict(observed.by_name)
    for owner in touched:
        port = PortKey.parse(owner.key) if owner.kind == "port" else None
        if port is not None and any(other != owner and other.kind == "port" and PortKey.parse(other.key) == port
                                    for other in observed.by_name.get(_named(owner) or ("", ""), ())):
            return None
        ipv6_owners.discard(owner)
        if not owned[owner]:
            del owned[owner]
        elif any(backend.is_ipv6(p.table, p.spec) for p in owned[owner]):
            ipv6_owners.add(owner)
        if port is not None:
            if owner in owned:
                live_ports[port] = owner in ipv6_owners
            else:
                del live_ports[port]
    for named in {named for owner in touched if (named := _named(owner)) is not None}:
        # an owner whose first rule is gone may come later among its own now
        left = [owner for owner in by_name[named] if owner in owned]
        if left:
            by_name[named] = _in_read_order(left, owned, after)
        else:
            del by_name[named]
    return replace(observed, owned=owned, strays=strays, foreign_jumps=foreign_jumps, forward=forward,
                   ipv6_owners=frozenset(ipv6_owners), live_ports=live_ports, by_name=by_name)


def _in_read_order(owners: Sequence[Owner], owned: Mapping[Owner, tuple[Placed, ...]],
                   read: Ruleset) -> tuple[Owner, ...]:
    """These owners in the order sorting the read anew finds them: by where the first rule of
    each sits (each one's rules are in read order)."""
    tables = list(read.tables)
    chains = {table: list(found) for table, found in read.tables.items()}

    def first(owner: Owner) -> tuple[int, int, int]:
        placed = owned[owner][0]
        return (tables.index(placed.table), chains[placed.table].index(placed.chain),
                read.tables[placed.table][placed.chain].rules.index(placed.spec))

    return tuple(sorted(owners, key=first))


def _named(owner: Owner) -> tuple[str, str] | None:
    """(stack, network or container) of an owner other than the skeleton."""
    if not owner.key:
        return None
    stack, name = owner.key.split("/")[:2]
    return stack, name


def _one_less(rules: tuple[Placed, ...], placed: Placed, nth: int) -> tuple[Placed, ...]:
    """Without the `nth` (from 0) of the rules equal to `placed`: they are in their chain's
    order, so it is the one deleted from the chain (IndexError if there are not that many)."""
    at = [index for index, rule in enumerate(rules) if rule == placed][nth]
    return rules[:at] + rules[at + 1:]
