"""The network diff, pure (no kernel): one host link dump as the kernel returns it, normalised by
observe_networks and diffed against the spec. Bridges made, repaired in place, made anew or
pruned; another stack's left alone; a link that holds a wanted name without our mark reported
at the spec field, never adopted; the forwarding sysctls switched on."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network

import pytest

from controllers.base import Desired, Diff, Focus
from controllers.change import Action
from controllers.network import KIND_NETWORK, KIND_SYSCTL, NetworkObservation, diff_networks, observe_networks
from kernel.rtnl_dump import LinkDump
from specs import names
from specs.validate import AppliedNet
from tests.firewall_support import build_desired
from tests.linkdumps import ChangeRow, Nic, bridge, change_rows, linkdump, loopback, nic, with_link

FRONT = {"subnet": "10.88.1.0/24", "subnet6": "fd00:88:1::/64"}
BACK = {"subnet": "10.88.2.0/24", "internal": True, "mtu": 9000}
DEMO = {"networks": {"front": FRONT, "back": BACK}}
"""front is dual-stack and routed (both forwarding sysctls wanted), back internal with jumbo frames."""

FRONT_ADDRESSES = ["10.88.1.1/24", "fd00:88:1::1/64"]
FRONT_BRIDGE = bridge(5, "demo", "front", *FRONT_ADDRESSES)
BACK_BRIDGE = bridge(6, "demo", "back", "10.88.2.1/24", mtu=9000)
OLD_BRIDGE = bridge(7, "demo", "old", "10.88.3.1/24")
OTHER_BRIDGE = bridge(8, "other", "net", "10.88.9.1/24")
UPLINK = nic(2, "eth0", "192.168.1.10/24")
"""The host's own uplink, foreign to us, with the default route."""


def host(*nics: Nic) -> LinkDump:
    return linkdump(loopback(), UPLINK, *nics, gateways=[(UPLINK.link.index, "192.168.1.1")])


def plan(dump: LinkDump, ip_forward: bool = True, ipv6_forwarding: bool = True,
         want: Desired | None = None) -> Diff:
    desired = want or build_desired({"stacks": {"demo": DEMO}, "scope": ["demo"]})
    return diff_networks(desired, observe_networks(dump, ip_forward, ipv6_forwarding))


CREATE_FRONT = (("bridge", None, "rc-demo-front"), ("mtu", None, 1500), ("up", None, True),
                ("addresses", None, FRONT_ADDRESSES))
CREATE_BACK = (("bridge", None, "rc-demo-back"), ("mtu", None, 9000), ("up", None, True),
               ("addresses", None, ["10.88.2.1/24"]))
DRIFTED = "drifted from the spec"
TURN_ON = (("value", "0", "1"),)


CASES = [
    pytest.param(host(), True, True, [
        (Action.CREATE, KIND_NETWORK, "demo/front", "not on the host", CREATE_FRONT),
        (Action.CREATE, KIND_NETWORK, "demo/back", "not on the host", CREATE_BACK),
    ], id="nothing exists"),
    pytest.param(host(FRONT_BRIDGE, BACK_BRIDGE), True, True, [], id="in sync"),
    pytest.param(host(with_link(FRONT_BRIDGE, mtu=1400), BACK_BRIDGE), True, True, [
        (Action.UPDATE, KIND_NETWORK, "demo/front", DRIFTED, (("mtu", 1400, 1500),)),
    ], id="mtu drifted"),
    pytest.param(host(FRONT_BRIDGE, with_link(BACK_BRIDGE, up=False)), True, True, [
        (Action.UPDATE, KIND_NETWORK, "demo/back", DRIFTED, (("up", False, True),)),
    ], id="down"),
    pytest.param(host(replace(FRONT_BRIDGE, addresses=("fd00:88:1::1/64",)), BACK_BRIDGE), True, True, [
        (Action.UPDATE, KIND_NETWORK, "demo/front", DRIFTED,
         (("addresses", ["fd00:88:1::1/64"], FRONT_ADDRESSES),)),
    ], id="gateway missing"),
    pytest.param(host(replace(FRONT_BRIDGE, addresses=("10.88.1.1/24",)), BACK_BRIDGE), True, True, [
        (Action.UPDATE, KIND_NETWORK, "demo/front", DRIFTED, (("addresses", ["10.88.1.1/24"], FRONT_ADDRESSES),)),
    ], id="gateway6 missing"),
    pytest.param(host(replace(FRONT_BRIDGE, addresses=("fd00:88:1::1/64", "10.88.1.254/24", "10.88.1.1/24")),
                      BACK_BRIDGE), True, True, [
        (Action.UPDATE, KIND_NETWORK, "demo/front", DRIFTED,
         (("addresses", ["10.88.1.1/24", "10.88.1.254/24", "fd00:88:1::1/64"], FRONT_ADDRESSES),)),
    ], id="extra address"),
    pytest.param(host(with_link(FRONT_BRIDGE, mtu=9000, up=False), BACK_BRIDGE), True, True, [
        (Action.UPDATE, KIND_NETWORK, "demo/front", DRIFTED, (("mtu", 9000, 1500), ("up", False, True))),
    ], id="mtu and up drifted together"),
    pytest.param(host(FRONT_BRIDGE, BACK_BRIDGE, OLD_BRIDGE), True, True, [
        (Action.DELETE, KIND_NETWORK, "demo/old", "no longer in the spec",
         (("bridge", "rc-demo-old", None), ("mtu", 1500, None), ("up", True, None),
          ("addresses", ["10.88.3.1/24"], None))),
    ], id="removed from the spec"),
    pytest.param(host(FRONT_BRIDGE, BACK_BRIDGE, OTHER_BRIDGE, with_link(OTHER_BRIDGE, index=9, name="rc-other-x")),
                 True, True, [], id="another stack's, even twice"),
    pytest.param(host(FRONT_BRIDGE, BACK_BRIDGE, with_link(FRONT_BRIDGE, index=9, name="rc-demo-front2")),
                 True, True, [
        (Action.DELETE, KIND_NETWORK, "demo/front", "a second bridge carries this network's mark",
         (("bridge", "rc-demo-front2", None), ("mtu", 1500, None), ("up", True, None),
          ("addresses", FRONT_ADDRESSES, None))),
    ], id="a second bridge with our mark"),
    pytest.param(host(FRONT_BRIDGE, BACK_BRIDGE), False, False, [
        (Action.UPDATE, KIND_SYSCTL, "net.ipv4.ip_forward", "non-internal networks route through the host",
         TURN_ON),
        (Action.UPDATE, KIND_SYSCTL, "net.ipv6.conf.all.forwarding",
         "non-internal dual-stack networks route IPv6 through the host", TURN_ON),
    ], id="forwarding off"),
    pytest.param(host(FRONT_BRIDGE, BACK_BRIDGE), True, False, [
        (Action.UPDATE, KIND_SYSCTL, "net.ipv6.conf.all.forwarding",
         "non-internal dual-stack networks route IPv6 through the host", TURN_ON),
    ], id="ipv6 forwarding off"),
]


@pytest.mark.parametrize(("dump", "ip_forward", "ipv6_forwarding", "expected"), CASES)
def test_changes_take_the_bridges_to_the_spec(dump: LinkDump, ip_forward: bool, ipv6_forwarding: bool,
                                              expected: list[ChangeRow]) -> None:
    diff = plan(dump, ip_forward, ipv6_forwarding)
    assert diff.issues == []
    assert change_rows(diff) == expected


@pytest.mark.parametrize("network", ["front", "back", "old"])
def test_a_focused_pass_makes_the_whole_diffs_changes_about_its_focus(network: str) -> None:
    """Over every case above: the bridges of the focus's networks, and the host-wide sysctls."""
    want = build_desired({"stacks": {"demo": DEMO}, "scope": ["demo"]})
    focus = Focus(frozenset(), frozenset({("demo", network)}))
    for case in CASES:
        dump, ip_forward, ipv6_forwarding, _expected = case.values
        whole = plan(dump, ip_forward, ipv6_forwarding, want)
        about = [c for c in whole.changes if c.stack is None or focus.has_network(c.key)]
        assert plan(dump, ip_forward, ipv6_forwarding, replace(want, focus=focus)).changes == about, case.id


ONLY_INTERNAL = {"networks": {"back": {**BACK, "subnet6": "fd00:88:2::/64"}}}
V4_ONLY = {"networks": {"front": {"subnet": "10.88.1.0/24"}}}


@pytest.mark.parametrize(("stacks", "expected"), [
    pytest.param({"demo": ONLY_INTERNAL}, [], id="internal networks only, one dual-stack"),
    pytest.param({"demo": V4_ONLY}, ["net.ipv4.ip_forward"], id="IPv4-only routed network"),
    pytest.param({}, [], id="down"),
])
def test_forwarding_is_switched_on_only_as_networks_need_it(stacks: dict[str, object], expected: list[str]) -> None:
    diff = plan(host(), ip_forward=False, ipv6_forwarding=False,
                want=build_desired({"stacks": stacks, "scope": ["demo"]}))
    assert [c.key for c in diff.changes if c.kind == KIND_SYSCTL] == expected


def test_down_prunes_every_bridge_of_the_stack_and_no_other() -> None:
    diff = plan(host(FRONT_BRIDGE, BACK_BRIDGE, OTHER_BRIDGE), want=build_desired({"stacks": {}, "scope": ["demo"]}))
    assert [(c.action, c.key, c.reason) for c in diff.changes] == [
        (Action.DELETE, "demo/front", "no longer in the spec"), (Action.DELETE, "demo/back", "no longer in the spec")]


HALF_MADE = nic(5, "rc-demo-front", kind="bridge", group=names.LINK_GROUP, up=False)
"""Created with our link group (set atomically) but killed before the alias was set: down, bare."""


@pytest.mark.parametrize(("dump", "expected", "disruptive"), [
    pytest.param(host(HALF_MADE, BACK_BRIDGE),
                 (Action.RECREATE, KIND_NETWORK, "demo/front", "finish an interrupted creation", CREATE_FRONT),
                 False, id="interrupted creation"),
    pytest.param(host(with_link(FRONT_BRIDGE, kind="dummy"), BACK_BRIDGE),
                 (Action.RECREATE, KIND_NETWORK, "demo/front", "link is a dummy", ()), True, id="our mark on a dummy"),
    pytest.param(host(with_link(FRONT_BRIDGE, name="rcbr-old"), BACK_BRIDGE),
                 (Action.RECREATE, KIND_NETWORK, "demo/front", "bridge name changed",
                  (("bridge", "rcbr-old", "rc-demo-front"),)), True, id="bridge renamed in the spec"),
])
def test_what_cannot_be_repaired_in_place_is_made_anew(dump: LinkDump, expected: ChangeRow, disruptive: bool) -> None:
    diff = plan(dump)
    assert diff.issues == []
    assert change_rows(diff) == [expected]
    assert diff.changes[0].disruptive is disruptive


FOREIGN_BRIDGE = nic(5, "rc-demo-front", kind="bridge")
IssueRow = tuple[str, tuple[str, ...], str]


def taken(by: str) -> IssueRow:
    return ("demo", ("networks", "front", "bridge"),
            f"bridge name 'rc-demo-front' is taken by {by}; remove it or set networks.front.bridge to another name")


SQUATTED = taken("a link reconcile does not own (kind bridge, index 5)")


@pytest.mark.parametrize(("dump", "expected"), [
    pytest.param(host(FOREIGN_BRIDGE, BACK_BRIDGE), [SQUATTED], id="foreign link with our bridge name"),
    pytest.param(host(with_link(FOREIGN_BRIDGE, kind=None, group=1), BACK_BRIDGE),
                 [taken("a link reconcile does not own (kind unknown, index 5)")],
                 id="foreign link of another group, no kind"),
    pytest.param(host(with_link(OTHER_BRIDGE, name="rc-demo-front", index=5), BACK_BRIDGE),
                 [("demo", ("networks", "front", "bridge"),  # check_host, from the applied networks
                   "bridge name 'rc-demo-front' is used by network 'net' of stack 'other', applied on this host: "
                   "set networks.front.bridge to another name"),
                  taken("network other/net of reconcile (kind bridge, index 5)")],  # the link holding the name
                 id="another stack's bridge with our name"),
    pytest.param(host(with_link(FRONT_BRIDGE, name="rcbr-old"), BACK_BRIDGE, FOREIGN_BRIDGE), [SQUATTED],
                 id="bridge renamed onto a foreign link's name"),
    # Our group, no alias, but more than a killed creation leaves (another stack's bridge under
    # the same default name, its alias cleared): in use, so not ours to make anew.
    pytest.param(host(with_link(HALF_MADE, up=True), BACK_BRIDGE), [SQUATTED], id="our group, no alias, up"),
    pytest.param(host(Nic(HALF_MADE.link, ("10.88.7.1/24",)), BACK_BRIDGE), [SQUATTED],
                 id="our group, no alias, an address"),
    pytest.param(host(HALF_MADE, BACK_BRIDGE, nic(9, "veth9", kind="veth", master=5)), [SQUATTED],
                 id="our group, no alias, a port"),
])
def test_a_foreign_link_holding_our_name_is_an_issue_never_adopted(
        dump: LinkDump, expected: list[IssueRow]) -> None:
    diff = plan(dump)
    assert [(i.stack, i.loc, i.message) for i in diff.issues] == expected
    assert [c for c in diff.changes if c.key == "demo/front"] == []


def test_foreign_addresses_and_routes_are_what_a_subnet_must_not_overlap() -> None:
    diff = plan(host(nic(3, "eth1", "10.88.1.50/24"), FRONT_BRIDGE, BACK_BRIDGE))
    assert [(i.stack, i.loc, i.message) for i in diff.issues] == [
        ("demo", ("networks", "front", "subnet"),
         "subnet 10.88.1.0/24 overlaps 10.88.1.0/24 on interface eth1 (address)")]


def test_observation_reads_ownership_and_subnets_back_from_the_marks() -> None:
    observed: NetworkObservation = observe_networks(host(FRONT_BRIDGE, OTHER_BRIDGE), True, False)
    assert observed.owned_stacks() == {"demo", "other"}
    assert set(observed.applied()) == {
        AppliedNet("demo", "front", IPv4Network("10.88.1.0/24"), "rc-demo-front", IPv6Network("fd00:88:1::/64")),
        AppliedNet("other", "net", IPv4Network("10.88.9.0/24"), "rc-other-net"),
    }
    assert {(n.ifname, str(n.network), n.source) for n in observed.foreign_nets} == {
        ("eth0", "192.168.1.0/24", "address"), ("eth0", "192.168.1.0/24", "route"),
        ("lo", "127.0.0.0/8", "address"), ("lo", "::1/128", "address"), ("lo", "::1/128", "route"),
    }


def test_a_subnet_from_the_pool_is_named_where_the_bridge_gets_its_address() -> None:
    pooled = build_desired({"stacks": {"demo": {"networks": {"front": {"subnet": "10.99.0.0/24"}}}}})
    pooled = replace(pooled, pooled={("demo", "front"): IPv4Network("10.99.0.0/24")})
    assert [c.reason for c in plan(host(), want=pooled).changes] == [
        "not on the host; subnet 10.99.0.0/24 from the pool"]
    pooled_bridge = bridge(5, "demo", "front", "10.99.0.1/24")
    assert plan(host(pooled_bridge), want=pooled).changes == []
    assert [c.reason for c in plan(host(with_link(pooled_bridge, mtu=1400)), want=pooled).changes] == [DRIFTED]
