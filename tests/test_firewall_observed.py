"""A read's sorting derived from the last one when rules were only deleted: always what sorting
the read anew gives (pure: random reads of both backends' shapes, no kernel)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest

from controllers import firewall_observed
from controllers.firewall_conflicts import intruders
from controllers.firewall_observed import FirewallObservation, our_chains, sorted_anew
from controllers.firewall_rules import NFT_LAYOUT
from kernel.netfilter import Backend, Chain, Ruleset
from kernel.netfilter_listeners import Listener
from kernel.netfilter_nft import Nftables
from tests.fake_nft import FakeNft
from tests.firewall_plans import DEMO, converge, desired
from tests.firewall_support import FakeBackend

BACKENDS: dict[str, Callable[[], Backend]] = {
    "nftables": lambda: Nftables(NFT_LAYOUT, FakeNft()),
    "iptables": FakeBackend,
}


def _rule(rng: random.Random, in_ours: bool) -> str:
    """One rule of the kinds a read sorts apart: an owner's (a port over IPv4 or IPv6, one
    written `080` where ours say `80`, a network's, the skeleton's), a stray, a foreign jump into
    one of our chains (as iptables and nft print it, one through a verdict map to two of ours),
    someone's comment."""
    port = rng.choice([80, 81, 82])
    stack, container = rng.choice(["s", "t"]), rng.choice(["a", "b"])
    written = rng.choice([str(port), str(port), f"0{port}"])
    kinds = [
        f'tcp dport {port} dnat ip to 10.0.0.2:80 comment "reconcile/v1 port {stack}/{container}/{written}/tcp"',
        f'tcp dport {port} dnat ip6 to [fd00::2]:80 comment "reconcile/v1 port {stack}/{container}/{port}/tcp"',
        f'oifname "rc{port}" drop comment "reconcile/v1 network {stack}/net{port}"',
        'jump RECONCILE-DNAT comment "reconcile/v1 chains"',
        f"tcp dport {port} accept",
        '-j RECONCILE-DNAT -m comment --comment "someone\'s"',
        f"-p tcp --dport {port} -j RECONCILE-DNAT",
        "-j ACCEPT",
        "jump RECONCILE-INPUT",
        'ip daddr vmap { 10.0.0.1 : jump RECONCILE-DNAT, 10.0.0.2 : goto RECONCILE-SNAT } '
        'comment "jump RECONCILE-INPUT"',
    ]
    return rng.choice(kinds if not in_ours else kinds[:5])


def _read(rng: random.Random, backend: Backend) -> Ruleset:
    ours = our_chains(backend)
    chains = [tc for tc in ours if rng.random() < 0.9]
    chains += [(table, "FOREIGN") for table in dict.fromkeys(table for table, _ in ours)]
    tables: dict[str, dict[str, Chain]] = {}
    for table, name in chains:
        rules = tuple(_rule(rng, (table, name) in ours) for _ in range(rng.randrange(0, 12)))
        tables.setdefault(table, {})[name] = Chain(name, rules)
    return Ruleset(tables)


def _edited(rng: random.Random, read: Ruleset, deletions_only: bool) -> Ruleset:
    """The read with rules deleted from a few chains (each chain edited a new object, the others
    the same); or, when not `deletions_only`, one other kind of edit besides."""
    tables = {table: dict(chains) for table, chains in read.tables.items()}
    for _ in range(rng.randrange(1, 4)):
        table = rng.choice([table for table, chains in tables.items() if chains])
        name = rng.choice(list(tables[table]))
        rules = list(tables[table][name].rules)
        for _ in range(min(len(rules), rng.randrange(0, 4))):
            rules.pop(rng.randrange(len(rules)))
        tables[table][name] = Chain(name, tuple(rules))
    if not deletions_only:
        table = rng.choice([table for table, chains in tables.items() if chains])
        name = rng.choice(list(tables[table]))
        rules = list(tables[table][name].rules)
        edit = rng.choice(["add", "reorder", "drop chain", "move chain"])
        if edit == "add":
            tables[table][name] = Chain(name, (*rules, _rule(rng, False)))
        elif edit == "reorder":
            tables[table][name] = Chain(name, tuple(reversed(rules)))
        elif edit == "drop chain":
            del tables[table][name]
        else:
            tables[table][name] = tables[table].pop(name)
    return Ruleset(tables)


def _history(seed: int, backend: Backend) -> Iterator[tuple[Ruleset, bool]]:
    rng = random.Random(seed)
    read = _read(rng, backend)
    yield read, False
    for _ in range(8):
        deletions_only = rng.random() < 0.8
        read = _edited(rng, read, deletions_only)
        yield read, deletions_only


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_read_sorted_from_the_last_one_is_the_read_sorted_anew(kind: str) -> None:
    derived = 0
    for seed in range(300):
        backend = BACKENDS[kind]()
        for read, _ in _history(seed, backend):
            before = firewall_observed._LAST_SORTED.get(backend)
            observed = firewall_observed._sorted(read, backend)
            assert observed == sorted_anew(read, backend), seed
            derived += before is not None and before[1] is not observed and _derived(before[1], observed)
    assert derived > 500  # the derivation was exercised, not only the fallback


def _derived(before: FirewallObservation, after: FirewallObservation) -> bool:
    """Whether `after` was built from `before` (it shares its chains' set, which a sorting anew
    builds afresh)."""
    return after.chains is before.chains


def test_a_deleted_rule_is_taken_out_of_the_last_sorting_not_sorted_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FakeBackend()
    converge(desired({"demo": DEMO}), backend)
    first = firewall_observed._sorted(backend.observe(), backend)
    dnat = backend.ruleset.tables["nat"]["RECONCILE-DNAT"]
    tables = {table: dict(chains) for table, chains in backend.ruleset.tables.items()}
    tables["nat"]["RECONCILE-DNAT"] = Chain(dnat.name, dnat.rules[1:])
    after = Ruleset(tables)

    def refused(*_: object) -> FirewallObservation:
        raise AssertionError("sorted anew")

    expected = sorted_anew(after, backend)
    monkeypatch.setattr(firewall_observed, "sorted_anew", refused)
    observed = firewall_observed._sorted(after, backend)
    assert observed == expected and observed != first
    assert len(observed.live_ports) == len(first.live_ports) - 1


def test_a_read_whose_chain_is_filed_under_another_name_is_sorted_anew() -> None:
    """No backend makes one (each files a chain under its name), but the derivation must not
    trust a read to be well formed: it falls back to sorting it anew."""
    backend = FakeBackend()
    port = '-p tcp -m comment --comment "reconcile/v1 port s/a/80/tcp" -j DNAT --to-destination 10.0.0.2:80'
    firewall_observed._sorted(Ruleset({"nat": {"X": Chain("RECONCILE-DNAT", (port, "-i lo " + port))}}), backend)
    for after in (Ruleset({"nat": {"X": Chain("RECONCILE-DNAT", ("-i lo " + port,))}}),
                  Ruleset({"nat": {"X": Chain("FOREIGN", ("-i lo " + port,))}})):
        assert firewall_observed._sorted(after, backend) == sorted_anew(after, backend)


def test_intruders_come_by_port_whatever_the_order_of_the_read() -> None:
    """A read derived from the last one keeps an owner whose first rule went where it was:
    what is reported of the live ports must not depend on it."""
    backend = FakeBackend()

    def dnat(key: str, more: str = "") -> str:
        return (f'-p tcp{more} -m tcp --dport 8080 -m comment --comment "reconcile/v1 port {key}" '
                "-j DNAT --to-destination 10.88.1.10:80")

    s_first, t, s_second = dnat("s/a/8080/tcp"), dnat("t/b/8080/tcp"), dnat("s/a/8080/tcp", " -i lo")
    firewall_observed._sorted(Ruleset({"nat": {"RECONCILE-DNAT": Chain("RECONCILE-DNAT", (s_first, t, s_second))}}),
                              backend)
    after = Ruleset({"nat": {"RECONCILE-DNAT": Chain("RECONCILE-DNAT", (t, s_second))}})
    listener = Listener("tcp", IPv4Address("0.0.0.0"), 8080, 1, 99, "nc -l 8080")
    derived, anew = firewall_observed._sorted(after, backend), sorted_anew(after, backend)
    assert list(derived.live_ports) != list(anew.live_ports)  # the order the derivation keeps
    assert [i.port.key for i in intruders(derived.live_ports, (listener,))] == \
        [i.port.key for i in intruders(anew.live_ports, (listener,))] == ["s/a/8080/tcp", "t/b/8080/tcp"]
