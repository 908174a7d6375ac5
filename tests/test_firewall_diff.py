"""The firewall controller's pure parts, table-driven, no kernel: rendering, ownership marks,
diff against observed rulesets (an in-memory backend plays iptables-restore), conflicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any

import pytest

from controllers.change import FieldChange
from controllers.firewall import Work
from controllers.firewall_observed import Placed
from controllers.firewall_rules import Owner, PortKey, parse_comment
from kernel.netfilter import Iface, Rule, render_iptables
from kernel.netfilter_conntrack import FlowFilter
from kernel.netfilter_listeners import Listener
from tests.firewall_plans import DEMO, OTHER, converge, desired, edit, heads, observed, plan
from tests.firewall_support import FRESH, FakeBackend
from tests.focus import focus_on


@pytest.mark.parametrize(("rule", "text"), [
    (Rule("nat", "RECONCILE-DNAT", "DNAT", "reconcile/v1 port demo/web/8080/tcp", protocol="tcp",
          dport=8080, to_destination=(IPv4Address("10.88.1.10"), 80)),
     '-p tcp -m tcp --dport 8080 -m comment --comment "reconcile/v1 port demo/web/8080/tcp" '
     "-j DNAT --to-destination 10.88.1.10:80"),
    (Rule("nat", "RECONCILE-DNAT", "DNAT", "c", destination=IPv4Network("127.0.0.1/32"),
          protocol="udp", dport=53, to_destination=(IPv4Address("10.0.0.2"), 5353)),
     "-d 127.0.0.1/32 -p udp -m udp --dport 53 -m comment --comment c "
     "-j DNAT --to-destination 10.0.0.2:5353"),
    (Rule("filter", "X", "DROP", "a b", destination=IPv4Network("127.0.0.0/8"), in_iface=Iface("br0"),
          ctstate=("DNAT", "ESTABLISHED", "RELATED"), ctstate_negated=True),
     "-d 127.0.0.0/8 -i br0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
     '-m comment --comment "a b" -j DROP'),
    (Rule("nat", "X", "MASQUERADE", "x.y", source=IPv4Network("10.1.0.0/16"), out_iface=Iface("br0", True)),
     '-s 10.1.0.0/16 ! -o br0 -m comment --comment "x.y" -j MASQUERADE'),
    (Rule("nat", "PREROUTING", "RECONCILE-DNAT", "reconcile/v1 chains", dst_local=True),
     '-m addrtype --dst-type LOCAL -m comment --comment "reconcile/v1 chains" -j RECONCILE-DNAT'),
])
def test_render_is_iptables_save_text(rule: Rule, text: str) -> None:
    assert render_iptables(rule) == text


@pytest.mark.parametrize(("comment", "owner"), [
    ("reconcile/v1 chains", Owner("chains", "")),
    ("reconcile/v1 network demo/front", Owner("network", "demo/front")),
    ("reconcile/v1 port demo/web/8080/tcp", Owner("port", "demo/web/8080/tcp")),
    ("reconcile/v1 port demo/web/127.0.0.1:53/udp", Owner("port", "demo/web/127.0.0.1:53/udp")),
    ("reconcile/v1 port demo/web/8080/sctp", None),
    ("reconcile/v1 network demo", None),
    ("reconcile/v1 chains extra", None),
    ("reconcile/v2 chains", None),
    ("docker rule", None),
])
def test_comments_parse_back_to_their_owner(comment: str, owner: Owner | None) -> None:
    assert parse_comment(comment) == owner
    if owner is not None:
        assert owner.comment == comment


def test_a_focused_pass_makes_the_whole_diffs_changes_about_its_focus() -> None:
    db = {"networks": {"front": {"ip": "10.88.1.20"}}, "ports": ["5432:5432"]}
    cache = {"networks": {"front": {"ip": "10.88.1.30"}}, "ports": ["6379:6379"]}
    backend = FakeBackend()
    converge(desired({"demo": {**DEMO, "containers": {**DEMO["containers"], "db": db, "cache": cache}}}), backend)
    edit(backend, "nat", "RECONCILE-DNAT", lambda rules: [r for r in rules if "demo/web/8080" not in r])
    edit(backend, "filter", "RECONCILE-INTERNAL", lambda rules: rules[1:])
    want = desired({"demo": {**DEMO, "containers": {**DEMO["containers"], "db": db}}})  # cache removed
    whole = plan(want, backend).changes
    assert [(c.kind, c.key) for c in whole] == [
        ("firewall", "demo/back"), ("port", "demo/cache/6379/tcp"), ("port", "demo/web/8080/tcp")]
    for containers in (["web"], ["db"], ["cache"]):
        focus = focus_on(want.stacks, "demo", containers)
        about = [c for c in whole if (focus.has_container(c.key) if c.kind == "port" else focus.has_network(c.key))]
        assert plan(replace(want, focus=focus), backend).changes == about


def test_cold_apply_creates_skeleton_networks_and_ports_then_nothing() -> None:
    backend = FakeBackend()
    result = converge(desired({"demo": DEMO}), backend)
    assert heads(result) == [
        ("create", "firewall", "chains"),
        ("create", "firewall", "demo/back"),
        ("create", "firewall", "demo/front"),
        ("create", "port", "demo/web/127.0.0.1:5353/udp"),
        ("create", "port", "demo/web/8080/tcp"),
    ]
    tcp = result.changes[-1]
    assert tcp.fields == (FieldChange(
        "nat", None, '-A RECONCILE-DNAT -p tcp -m tcp --dport 8080 -m comment --comment '
        '"reconcile/v1 port demo/web/8080/tcp" -j DNAT --to-destination 10.88.1.10:80'),)
    assert isinstance(tcp.desired, Work) and tcp.desired.flush == ()  # new TCP: nothing stale
    udp = result.changes[-2]
    assert isinstance(udp.desired, Work)
    assert udp.desired.flush == (FlowFilter("udp", 5353, IPv4Address("127.0.0.1")),)
    front = result.changes[2]
    assert FieldChange("route_localnet", "1", "1") not in front.fields
    assert len(backend.applied) == 1
    assert plan(desired({"demo": DEMO}), backend).changes == []


def test_route_localnet_is_set_on_non_internal_bridges_only() -> None:
    result = plan(desired({"demo": DEMO}), FakeBackend(), route_localnet={"rcbr0": "0", "rcbr1": "0"})
    fields = {c.key: [f for f in c.fields if f.path == "route_localnet"] for c in result.changes}
    assert fields["demo/front"] == [FieldChange("route_localnet", "0", "1")]
    assert fields["demo/back"] == []


def test_route_localnet_is_switched_off_when_a_network_turns_internal() -> None:
    """Left on, containers of the now internal network could reach the host's 127.0.0.1: the
    loopback guard is only among a non-internal network's rules."""
    result = plan(desired({"demo": DEMO}), FakeBackend(), route_localnet={"rcbr0": "1", "rcbr1": "1"})
    fields = {c.key: [f for f in c.fields if f.path == "route_localnet"] for c in result.changes}
    assert fields["demo/front"] == []
    assert fields["demo/back"] == [FieldChange("route_localnet", "1", "0")]


COPIED = '-i rcbr0 -m comment --comment "reconcile/v1 network demo/front" -j ACCEPT'
"""One of our rules, copied by hand where it does not belong."""


@pytest.mark.parametrize(("table", "chain", "drift", "expected"), [
    ("nat", "RECONCILE-DNAT", lambda r: [x for x in r if "8080" not in x],
     [("create", "port", "demo/web/8080/tcp")]),
    ("nat", "RECONCILE-DNAT", lambda r: r + [x for x in r if "8080" in x],  # a duplicate
     [("update", "port", "demo/web/8080/tcp")]),
    ("nat", "RECONCILE-SNAT", lambda r: [], [("update", "firewall", "demo/front")]),
    ("nat", "PREROUTING", lambda r: [], [("update", "firewall", "chains")]),
    ("filter", "FORWARD", lambda r: [], [("update", "firewall", "chains")]),
    ("filter", "RECONCILE-FORWARD", lambda r: list(reversed(r)), [("update", "firewall", "chains")]),
    ("filter", "RECONCILE-ACCEPT", lambda r: r + ["-j ACCEPT"], [("update", "firewall", "chains")]),
    ("filter", "RECONCILE-FORWARD", lambda r: [COPIED, *r], [("update", "firewall", "chains")]),
    ("filter", "RECONCILE-INTERNAL", lambda r: None,  # chain deleted outright
     [("update", "firewall", "chains"), ("update", "firewall", "demo/back")]),
])
def test_drift_is_named_and_repaired(table: str, chain: str, drift: Callable[[list[str]], Any],
                                     expected: list[tuple[str, str, str]]) -> None:
    backend = FakeBackend()
    want = desired({"demo": DEMO})
    converge(want, backend)
    edit(backend, table, chain, drift)
    assert heads(converge(want, backend)) == expected
    assert plan(want, backend).changes == []


def test_changed_target_is_one_rule_old_to_new_and_flushes_flows() -> None:
    backend = FakeBackend()
    converge(desired({"demo": DEMO}), backend)
    web = DEMO["containers"]["web"]
    moved = {**DEMO, "containers": {"web": {**web, "ports": ["8080:81", "127.0.0.1:5353:53/udp"]}}}
    result = converge(desired({"demo": moved}), backend)
    assert heads(result) == [("update", "port", "demo/web/8080/tcp")]
    (field,) = result.changes[0].fields
    assert field.old.endswith("--to-destination 10.88.1.10:80")
    assert field.new.endswith("--to-destination 10.88.1.10:81")
    assert isinstance(result.changes[0].desired, Work)
    assert result.changes[0].desired.flush == (FlowFilter("tcp", 8080, None),)


def test_scope_keeps_other_stacks_and_teardown_removes_everything() -> None:
    backend = FakeBackend()
    converge(desired({"demo": DEMO, "other": OTHER}), backend)
    before_other = {k: v for k, v in observed(backend).owned.items() if k.stack == "other"}

    result = converge(desired({}, scope=["demo"]), backend)
    assert heads(result) == [
        ("delete", "firewall", "demo/back"), ("delete", "firewall", "demo/front"),
        ("delete", "port", "demo/web/127.0.0.1:5353/udp"), ("delete", "port", "demo/web/8080/tcp")]
    assert all(isinstance(c.desired, Work) and c.desired.flush for c in result.changes if c.kind == "port")
    after = observed(backend)
    assert {k: v for k, v in after.owned.items() if k.stack} == before_other
    assert plan(desired({"other": OTHER}, scope=["other"]), backend).changes == []

    result = converge(desired({}, scope=["other"]), backend)
    assert ("delete", "firewall", "chains") in heads(result)
    assert backend.ruleset.tables == FRESH.tables


def test_out_of_scope_rules_are_not_touched_even_when_drifted() -> None:
    backend = FakeBackend()
    converge(desired({"demo": DEMO, "other": OTHER}), backend)
    edit(backend, "nat", "RECONCILE-DNAT", lambda r: [x for x in r if "9090" not in x])
    assert heads(plan(desired({"demo": DEMO}, scope=["demo"]), backend)) == []


def _listener(address: str, port: int, protocol: str = "tcp") -> Listener:
    ip = IPv6Address(address) if ":" in address else IPv4Address(address)
    return Listener(protocol, ip, port, inode=4242, pid=77, command="nginx")


@pytest.mark.parametrize(("listener", "conflict"), [
    (_listener("0.0.0.0", 8080), True),
    (_listener("::", 8080), True),
    (_listener("127.0.0.1", 8080), True),  # 8080 answers on every address, 127.0.0.1 too
    (_listener("::ffff:10.0.0.1", 8080), True),
    (_listener("::1", 8080), False),  # IPv6 only: never sees the IPv4 DNAT'ed port
    (_listener("0.0.0.0", 8080, "udp"), False),
    (_listener("0.0.0.0", 5353, "udp"), True),
    (_listener("10.0.0.1", 5353, "udp"), False),  # 5353/udp is narrowed to 127.0.0.1
    (_listener("0.0.0.0", 5353, "tcp"), False),
])
def test_a_foreign_listener_is_an_issue_naming_the_process(listener: Listener, conflict: bool) -> None:
    result = plan(desired({"demo": DEMO}), FakeBackend(), listeners=(listener,))
    if not conflict:
        assert result.issues == []
        return
    (issue,) = result.issues
    index = 0 if listener.port == 8080 else 1
    where = "" if index == 0 else "127.0.0.1:"
    assert (issue.stack, issue.loc) == ("demo", ("containers", "web", "ports", index))
    shown = f"[{listener.address}]" if listener.address.version == 6 else str(listener.address)
    port = f"{listener.port}/{listener.protocol}"
    assert issue.message == f"host port {where}{port} is in use: nginx (pid 77) listening on {shown}:{port}"


def test_a_port_published_by_another_applied_stack_is_an_issue_naming_it() -> None:
    backend = FakeBackend()
    converge(desired({"other": OTHER}), backend)
    clash = {**DEMO, "containers": {"web": {**DEMO["containers"]["web"], "ports": ["9090:80"]}}}
    result = plan(desired({"demo": clash}, scope=["demo"]), backend)
    assert [(i.stack, i.loc, i.message) for i in result.issues] == [
        ("demo", ("containers", "web", "ports", 0),
         "host port 9090/tcp is also published by stack 'other' (container 'api')")]
    # Narrowed to distinct addresses, the same port is no conflict.
    apart = {**OTHER, "containers": {"api": {**OTHER["containers"]["api"], "ports": ["10.0.0.1:9090:90"]}}}
    mine = {**DEMO, "containers": {"web": {**DEMO["containers"]["web"], "ports": ["10.0.0.2:9090:80"]}}}
    assert plan(desired({"demo": mine, "other": apart}), FakeBackend()).issues == []


def test_two_containers_of_a_run_publishing_one_port_are_both_reported() -> None:
    twice = {**DEMO, "containers": {
        "web": {"networks": {"front": {"ip": "10.88.1.10"}}, "ports": ["8080:80"]},
        "api": {"networks": {"front": {"ip": "10.88.1.11"}}, "ports": ["8080:81"]}}}
    result = plan(desired({"demo": twice}), FakeBackend())
    assert sorted((i.loc, i.message) for i in result.issues) == [
        (("containers", "api", "ports", 0), "host port 8080/tcp is also published by container 'web'"),
        (("containers", "web", "ports", 0), "host port 8080/tcp is also published by container 'api'")]


def test_ports_need_a_non_internal_default_route() -> None:
    inside = {**DEMO, "containers": {"db": {"networks": {"back": {"ip": "10.88.2.10"}},
                                            "default_route": "back", "ports": ["5432:5432"]}}}
    result = plan(desired({"demo": inside}), FakeBackend())
    assert [(i.loc, i.message) for i in result.issues] == [
        (("containers", "db", "ports"), "published ports need a non-internal default_route network")]
    assert "port" not in {c.kind for c in result.changes}


def test_port_keys_parse_back() -> None:
    key = PortKey("demo", "web", IPv4Address("127.0.0.1"), 53, "udp")
    assert PortKey.parse(key.key) == key
    assert PortKey.parse("demo/web/8080/tcp") == PortKey("demo", "web", None, 8080, "tcp")
    # anyone may write a comment: an impossible address is not one of ours, not a crash
    assert PortKey.parse("demo/web/999.0.0.1:8080/tcp") is None
    assert PortKey.parse("demo/web/127.0.0.01:8080/tcp") is None


def test_the_longest_port_comment_fits_what_nft_stores() -> None:
    """A stack name of 16 and a container key of 63 (their longest), an IPv4 host address and a
    five-digit port: nft refuses a comment longer than 128 bytes (NFTNL_UDATA_COMMENT_MAXLEN)."""
    longest = PortKey("s" * 16, "c" * 63, IPv4Address("255.255.255.255"), 65535, "tcp")
    comment = Owner("port", longest.key).comment
    assert len(comment.encode()) <= 128 and parse_comment(comment) == Owner("port", longest.key)


def test_teardown_empties_a_chain_a_foreign_rule_jumps_to_and_names_the_rule() -> None:
    """The kernel refuses to delete a chain still jumped to (and would roll back the whole
    table's batch with it); the foreign rule is not ours to delete."""
    backend = FakeBackend()
    converge(desired({"demo": DEMO}), backend)
    edit(backend, "filter", "INPUT", lambda r: [*r, "-j RECONCILE-INPUT"])
    assert observed(backend).foreign_jumps == {
        ("filter", "RECONCILE-INPUT"): (Placed("filter", "INPUT", "-j RECONCILE-INPUT"),)}

    result = converge(desired({}, scope=["demo"]), backend)
    (skeleton,) = [c for c in result.changes if c.key == "chains"]
    assert FieldChange("chain", "filter RECONCILE-INPUT", "filter RECONCILE-INPUT (emptied)") in skeleton.fields
    assert isinstance(skeleton.desired, Work) and skeleton.desired.errors == (
        "chain filter RECONCILE-INPUT was emptied but not deleted: rules that are not reconcile's to delete "
        "jump to it (`-j RECONCILE-INPUT` in chain filter INPUT); delete them and run again",)
    assert backend.ruleset.tables["filter"]["INPUT"].rules == ("-j RECONCILE-INPUT",)
    assert {t: [c for c in chains if "RECONCILE" in c] for t, chains in backend.ruleset.tables.items()} == {
        "nat": [], "filter": ["RECONCILE-INPUT"], "ip6 nat": [], "ip6 filter": []}
    assert backend.ruleset.tables["filter"]["RECONCILE-INPUT"].rules == ()

    edit(backend, "filter", "INPUT", lambda r: [])  # the admin deletes their rule
    converge(desired({}, scope=["demo"]), backend)
    assert backend.ruleset.tables == FRESH.tables
