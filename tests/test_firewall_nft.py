"""The nftables backend's pure parts, no kernel: rendering every rule kind to the text `nft -a
list` prints back, parsing that listing (captured from the real kernel) into chains by logical
table with handles, the `nft -f` script of a batch, the controller's diff over a captured
listing (no-op, drift, teardown), migration between backends, and backend selection."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from controllers.base import Focus
from controllers.change import Action, Change
from controllers.firewall import (
    KIND_FIREWALL,
    Backends,
    FirewallController,
    Work,
    backends,
    diff_firewall,
    kept_backends,
)
from controllers.firewall_observed import Placed, observe_firewall
from controllers.firewall_rules import NFT_LAYOUT, network_rules, port_key, port_rules, skeleton_rules
from kernel.netfilter import Chain, Iface, NetfilterError, Op, OpKind, Rule, Ruleset
from kernel.netfilter_nft import Nftables, nft_script, parse_list, render_nft
from kernel.nft_changes import NftChanges
from kernel.nft_read import with_chains
from reconcile.engine.session import HostDrivers
from reconcile.engine.settings import Settings
from tests.fake_nft import CAPTURED, FakeNft
from tests.firewall_plans import DEMO, ROUTE_LOCALNET_ON, converge, desired, heads
from tests.firewall_support import FakeBackend, build_stack


def _demo_rules() -> list[Rule]:
    stack = build_stack("demo", DEMO)
    web = stack.containers["web"]
    return [*skeleton_rules(),
            *(r for key, net in stack.networks.items() for r in network_rules("demo", key, net)),
            *(r for m in web.ports for r in port_rules(port_key("demo", "web", m), IPv4Address("10.88.1.10"), None,
                                                       m.container))]


def test_every_rule_renders_as_nft_lists_it() -> None:
    """Every rule the DEMO stack makes (skeleton, an internal and a routed network, both port
    kinds) appears verbatim in the kernel's listing, in its chain."""
    ruleset, _ = parse_list(CAPTURED, NFT_LAYOUT)
    for rule in _demo_rules():
        chain = ruleset.chain(rule.table, rule.chain)
        assert chain is not None and render_nft(rule) in chain.rules, render_nft(rule)


@pytest.mark.parametrize(("rule", "text"), [
    (Rule("nat", "RECONCILE-DNAT", "DNAT", "c", destination=IPv4Network("127.0.0.1/32"), protocol="udp",
          dport=53, to_destination=(IPv4Address("10.0.0.2"), 5353)),
     'ip daddr 127.0.0.1 udp dport 53 dnat ip to 10.0.0.2:5353 comment "c"'),
    (Rule("filter", "X", "DROP", "a b", destination=IPv4Network("127.0.0.0/8"), in_iface=Iface("br0"),
          ctstate=("DNAT", "ESTABLISHED", "RELATED"), ctstate_negated=True),
     'ip daddr 127.0.0.0/8 iifname "br0" ct state ! established,related ct status ! dnat drop comment "a b"'),
    (Rule("nat", "X", "MASQUERADE", "x", source=IPv4Network("10.1.0.0/16"), out_iface=Iface("br0", True)),
     'ip saddr 10.1.0.0/16 oifname != "br0" masquerade comment "x"'),
    (Rule("filter", "X", "RECONCILE-ISOLATE-TO", "x", ctstate=("DNAT",), ctstate_negated=True),
     'ct status ! dnat jump RECONCILE-ISOLATE-TO comment "x"'),
])
def test_render_is_nft_list_text(rule: Rule, text: str) -> None:
    assert render_nft(rule) == text


def test_parse_keys_chains_by_logical_table_with_handles() -> None:
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    assert sorted(ruleset.tables) == ["filter", "nat"]
    assert sorted(ruleset.tables["nat"]) == ["OUTPUT", "POSTROUTING", "PREROUTING", "RECONCILE-DNAT", "RECONCILE-SNAT"]
    assert ruleset.chain("filter", "FORWARD").rules == ('jump RECONCILE-FORWARD comment "reconcile/v1 chains"',)
    assert handles[("PREROUTING", 'fib daddr type local jump RECONCILE-DNAT comment "reconcile/v1 chains"')] == [14]
    assert parse_list("table inet reconcile { # handle 1\n\tchain X { # handle 9\n\t\taccept # handle 3\n\t}\n}\n",
                      NFT_LAYOUT)[0].tables == {"inet": {"X": Chain("X", ("accept",))}}


def test_script_declares_base_chains_deletes_by_handle_and_drops_the_table_last() -> None:
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    spec = 'fib daddr type local jump RECONCILE-DNAT comment "reconcile/v1 chains"'
    script = nft_script([Op(OpKind.APPEND_RULE, "nat", "RECONCILE-DNAT", "tcp dport 1 accept"),
                         Op(OpKind.DELETE_RULE, "nat", "PREROUTING", spec),
                         Op(OpKind.DECLARE_CHAIN, "nat", "PREROUTING")], NFT_LAYOUT, ruleset, handles)
    assert script == (
        "add table inet reconcile\n"
        "add chain inet reconcile PREROUTING { type nat hook prerouting priority dstnat; policy accept; }\n"
        "flush chain inet reconcile PREROUTING\n"
        "delete rule inet reconcile PREROUTING handle 14\n"
        "add rule inet reconcile RECONCILE-DNAT tcp dport 1 accept\n")
    with pytest.raises(NetfilterError, match="no such rule in PREROUTING: accept"):
        nft_script([Op(OpKind.DELETE_RULE, "nat", "PREROUTING", "accept")], NFT_LAYOUT, ruleset, handles)
    everything = [Op(OpKind.DELETE_CHAIN, t, c) for t, chains in ruleset.tables.items() for c in chains]
    lines = nft_script(everything, NFT_LAYOUT, ruleset, handles).splitlines()
    assert lines[-1] == "delete table inet reconcile"
    assert max(i for i, line in enumerate(lines) if line.startswith("flush")) < min(
        i for i, line in enumerate(lines) if line.startswith("delete chain"))


def _nft_observed(listing: str | None = CAPTURED):
    backend = Nftables(NFT_LAYOUT, FakeNft(listing))
    return backend, observe_firewall(backend.observe(), (), ROUTE_LOCALNET_ON, backend)


def test_a_read_is_kept_while_nf_tables_commits_nothing() -> None:
    """The watch agent's focused passes observe again and again: the table is listed anew only
    once nf_tables' generation moved (anyone's write, or ours that did more than rules), or
    when it cannot be read; our own batch of rules alone is played into the read."""
    session = FakeNft()
    backend = Nftables(NFT_LAYOUT, session)
    first = backend.observe()
    assert backend.observe() is first and session.listings == 1
    backend.apply([Op(OpKind.APPEND_RULE, "nat", "RECONCILE-DNAT", "tcp dport 1 accept")])  # ours
    followed_read = backend.observe()
    assert followed_read is not first and session.listings == 1 and session.chain_listings == []
    assert followed_read.chain("nat", "RECONCILE-DNAT").rules[-1] == "tcp dport 1 accept"  # played into the read
    backend.apply([Op(OpKind.DECLARE_CHAIN, "nat", "RECONCILE-NEW")])  # ours, more than rules
    assert backend.observe() is not followed_read and session.listings == 2
    session.committed = (session.committed or 0) + 1  # someone else's transaction, any table
    backend.observe()
    assert session.listings == 3
    session.committed = None
    backend.observe()
    backend.observe()
    assert session.listings == 5


def test_diff_over_the_captured_listing_is_empty_and_sees_drift() -> None:
    backend, observed = _nft_observed()
    assert diff_firewall(desired({"demo": DEMO}), observed, backend).changes == []
    drifted = "\n".join(line for line in CAPTURED.splitlines() if "8080" not in line and "FORWARD {" not in line)
    backend, observed = _nft_observed(drifted + "\n")
    assert heads(diff_firewall(desired({"demo": DEMO}), observed, backend)) == [
        ("update", "firewall", "chains"), ("create", "port", "demo/web/8080/tcp")]


def test_cold_start_and_teardown_scripts() -> None:
    backend, observed = _nft_observed(None)
    cold = diff_firewall(desired({"demo": DEMO}), observed, backend)
    assert heads(cold)[0] == ("create", "firewall", "chains")
    backend, observed = _nft_observed()
    down = diff_firewall(desired({}, scope=["demo"]), observed, backend)
    backend.apply([op for c in down.changes if isinstance(c.desired, Work) for op in c.desired.ops])
    assert backend._session.scripts[0].splitlines()[-1] == "delete table inet reconcile"


def test_teardown_keeps_a_foreign_chain_of_our_table_and_empties_the_chains_it_jumps_to() -> None:
    """Someone's chain in our table (the only place an nft jump into ours can come from) jumps
    to one of our chains through a verdict map and names another in its comment: that chain is
    emptied, not deleted (the kernel would refuse, rolling the whole batch back), the rule is
    named, and the table, holding their chain, stays."""
    admin = ('\tchain admin { # handle 90\n'
             '\t\tip daddr vmap { 10.0.0.1 : jump RECONCILE-INPUT, 10.0.0.2 : drop } '
             'comment "not jump RECONCILE-DNAT" # handle 91\n\t}\n')
    dnat = "\tchain RECONCILE-DNAT {"
    backend, observed = _nft_observed(CAPTURED.replace(dnat, admin + dnat, 1))
    spec = 'ip daddr vmap { 10.0.0.1 : jump RECONCILE-INPUT, 10.0.0.2 : drop } comment "not jump RECONCILE-DNAT"'
    assert observed.foreign_jumps == {("filter", "RECONCILE-INPUT"): (Placed("inet", "admin", spec),)}
    down = diff_firewall(desired({}, scope=["demo"]), observed, backend)
    (skeleton,) = [c for c in down.changes if c.key == "chains"]
    assert isinstance(skeleton.desired, Work) and skeleton.desired.errors == (
        "chain inet reconcile RECONCILE-INPUT was emptied but not deleted: rules that are not reconcile's to "
        f"delete jump to it (`{spec}` in chain inet reconcile admin); delete them and run again",)
    backend.apply([op for c in down.changes if isinstance(c.desired, Work) for op in c.desired.ops])
    script = backend._session.scripts[0].splitlines()
    assert "flush chain inet reconcile RECONCILE-INPUT" in script
    assert "delete chain inet reconcile RECONCILE-DNAT" in script
    assert not any(line.endswith((" admin", "RECONCILE-INPUT")) and line.startswith("delete") for line in script)
    assert "delete table inet reconcile" not in script


def test_leftovers_of_the_other_backend_are_removed_in_the_same_apply() -> None:
    """Switching to nftables: the iptables rules of the scope go, after nftables' batch."""
    iptables = FakeBackend()
    converge(desired({"demo": DEMO}), iptables)
    nft = Nftables(NFT_LAYOUT, FakeNft(None))
    controller = FirewallController(nft, [iptables])
    left = observe_firewall(iptables.observe(), (), {}, iptables)
    observed = observe_firewall(nft.observe(), (), ROUTE_LOCALNET_ON, nft)
    plan = diff_firewall(desired({"demo": DEMO}), replace(observed, leftovers={"fake": left}), nft,
                         {"fake": iptables})
    gone = [c for c in plan.changes if c.desired.backend == "fake"]
    assert {c.action.value for c in gone} == {"delete"} and len(gone) == 5
    assert all(c.reason.endswith("(left by the fake backend)") for c in gone)
    controller._apply_ops(nft, [op for c in plan.changes if not c.desired.backend for op in c.desired.ops])
    controller._apply_ops(iptables, [op for c in gone for op in c.desired.ops])
    assert observe_firewall(iptables.observe(), (), {}, iptables).owned == {}


@pytest.mark.parametrize(("choice", "usable", "expected"), [
    ("auto", True, ("nftables", ["iptables-nft"])),
    ("auto", False, ("iptables-nft", [])),
    ("iptables", True, ("iptables-nft", ["nftables"])),
    ("nftables", True, ("nftables", ["iptables-nft"])),
])
def test_backend_selection(choice: str, usable: bool, expected: tuple[str, list[str]]) -> None:
    fake = FakeNft(usable=usable)
    backend, others = backends(choice, fake, fake.session)
    assert (backend.name, [o.name for o in others]) == expected


def test_auto_keeps_iptables_under_a_foreign_forward_drop_policy() -> None:
    """Our nftables accept would not be final: iptables' FORWARD policy would drop the packet."""
    fake = FakeNft(forward="DROP")
    backend, others = backends("auto", fake, fake.session)
    assert (backend.name, [o.name for o in others]) == ("iptables-nft", ["nftables"])
    assert backends("nftables", fake, fake.session)[0].name == "nftables"  # as asked


def test_backends_detected_again_are_the_ones_kept_with_their_read() -> None:
    """The watch agent detects the backends again on each pass over everything: one detected
    again is the instance it had, in its new place if `auto` swapped them, with its read (not
    listed again while nf_tables committed nothing); one no longer usable is let go."""
    fake = FakeNft()
    before = backends("auto", fake, fake.session)
    read = before[0].observe()
    again = kept_backends(backends("auto", fake, fake.session), before)
    assert again[0] is before[0] and len(again[1]) == 1 and again[1][0] is before[1][0]
    assert again[0].observe() is read and fake.listings == 1
    swapped = kept_backends(backends("auto", FakeNft(forward="DROP"), fake.session), before)
    assert swapped[0] is before[1][0] and swapped[1][0] is before[0]
    unusable = FakeNft(usable=False)
    alone = kept_backends(backends("auto", unusable, unusable.session), before)
    assert alone[0] is before[1][0] and alone[1] == ()


def test_the_drivers_detected_again_keep_the_backends_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """HostDrivers.detect(before=...) is how the agent's passes over everything keep them."""
    fake = FakeNft()

    def detected(choice: str, nft_changes: NftChanges | None = None) -> Backends:
        return backends(choice, fake, fake.session, nft_changes)

    monkeypatch.setattr("reconcile.engine.session.backends", detected)
    monkeypatch.setattr("kernel.cgroups.detect", lambda: None)
    settings = Settings(state_dir=Path("/nonexistent"), cgroup_parent="rc-test", firewall_backend="auto")
    first = HostDrivers.detect(settings)
    assert HostDrivers.detect(settings, before=first).firewall[0] is first.firewall[0]
    assert HostDrivers.detect(settings).firewall[0] is not first.firewall[0]


def test_a_pass_over_everything_lists_a_derived_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read our batch was played into serves focused passes; a pass over everything lists the
    table again instead (once), and a listing nf_tables has not changed since it keeps."""
    monkeypatch.setattr("controllers.firewall.read_listeners", lambda: ())
    monkeypatch.setattr("kernel.netfilter.read_route_localnet", lambda ifaces=None: {})
    session = FakeNft()
    controller = FirewallController(Nftables(NFT_LAYOUT, session))
    controller.observe()
    controller.observe()
    assert session.listings == 1
    controller.apply([Change(Action.UPDATE, KIND_FIREWALL, "chains", desired=Work(
        (Op(OpKind.APPEND_RULE, "nat", "RECONCILE-DNAT", "tcp dport 1 accept"),)))])
    controller.observe(Focus(frozenset(), frozenset()))
    assert session.listings == 1
    controller.observe()
    assert session.listings == 2
    controller.observe()
    assert session.listings == 2
    other = FakeNft()  # nftables being left behind: only a pass over everything reads it
    controller = FirewallController(FakeBackend(), [Nftables(NFT_LAYOUT, other)])
    controller.observe()
    controller.apply([Change(Action.UPDATE, KIND_FIREWALL, "chains", desired=Work(
        (Op(OpKind.APPEND_RULE, "nat", "RECONCILE-DNAT", "tcp dport 1 accept"),), backend="nftables"))])
    controller.observe()
    assert other.listings == 2


def test_backend_selection_errors() -> None:
    with pytest.raises(NetfilterError, match="unknown firewall backend 'pf'"):
        backends("pf", FakeNft())
    unusable = FakeNft(usable=False)
    with pytest.raises(NetfilterError, match="the nftables backend needs libnftables"):
        backends("nftables", unusable, unusable.session)



def test_a_listing_of_some_chains_takes_their_place_in_a_read() -> None:
    read, handles = parse_list(CAPTURED, NFT_LAYOUT)
    chain = read.chain("nat", "RECONCILE-DNAT")
    assert chain is not None and chain.rules
    listed = Ruleset({"nat": {"RECONCILE-DNAT": Chain("RECONCILE-DNAT", ("tcp dport 9 accept",))}})
    ruleset, merged = with_chains(read, handles, listed, {("RECONCILE-DNAT", "tcp dport 9 accept"): [99]})
    assert ruleset.chain("nat", "RECONCILE-DNAT") == Chain("RECONCILE-DNAT", ("tcp dport 9 accept",))
    assert {name: c for t, chains in ruleset.tables.items() for name, c in chains.items() if name != "RECONCILE-DNAT"} \
        == {name: c for t, chains in read.tables.items() for name, c in chains.items() if name != "RECONCILE-DNAT"}
    assert merged == {**{k: v for k, v in handles.items() if k[0] != "RECONCILE-DNAT"},
                      ("RECONCILE-DNAT", "tcp dport 9 accept"): [99]}
