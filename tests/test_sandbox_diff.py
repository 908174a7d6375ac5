"""The sandbox diff, pure (no kernel): the host's link dump and each sandbox namespace's, as the
kernel returns them (lo, eth0... with addresses and routes), read by the controller's own
observe (namespaces listed and dumped by stand-ins) and diffed against the spec. Sandboxes and
endpoints made, repaired in place, made anew or pruned; another stack's left alone; a host end
whose sandbox is gone removed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Protocol, cast

import pytest

from controllers.base import Desired, Focus
from controllers.change import Action
from controllers.sandbox import (
    KIND_ENDPOINT,
    KIND_SANDBOX,
    SandboxController,
    SandboxObservation,
    diff_sandboxes,
    observe_sandbox,
)
from kernel import netns
from kernel.netlink import Netlink
from kernel.rtnl_dump import LinkDump
from specs import names
from tests.firewall_support import build_desired
from tests.focus import focus_on
from tests.linkdumps import ChangeRow, FieldRow, Nic, bridge, change_rows, linkdump, loopback, nic, with_link

FRONT = {"subnet": "10.88.1.0/24", "subnet6": "fd00:88:1::/64"}
BACK = {"subnet": "10.88.2.0/24", "internal": True}
WEB = {"networks": {"front": {"ip": "10.88.1.10", "ip6": "fd00:88:1::10"}, "back": {"ip": "10.88.2.10"}}}
DB = {"networks": {"back": {"ip": "10.88.2.20"}}}
DEMO = {"networks": {"front": FRONT, "back": BACK}, "containers": {"web": WEB, "db": DB}}
OTHER = {"networks": {"net": {"subnet": "10.88.9.0/24"}}, "containers": {"api": {"networks": {"net": {}}}}}
"""web: eth0 on front (dual-stack, its default routes), eth1 on back (internal); db: eth0 on back
only, so no default route. Stack other is out of scope."""


def desired(demo: Mapping[str, object] = DEMO) -> Desired:
    return build_desired({"stacks": {"demo": demo, "other": OTHER}, "scope": ["demo"]})


BRIDGES = {"front": bridge(5, "demo", "front", "10.88.1.1/24", "fd00:88:1::1/64"),
           "back": bridge(6, "demo", "back", "10.88.2.1/24"),
           "net": bridge(8, "other", "net", "10.88.9.1/24")}
UPLINK = nic(2, "eth0", "192.168.1.10/24")


def host_end(index: int, container: str, network: str, stack: str = "demo", **link: Any) -> Nic:
    """The host end of an endpoint, on its network's bridge with hairpin on and IPv6 off (a port
    no more, with no hairpin flag, when there is no such bridge: deleting a bridge detaches its
    ports)."""
    on = BRIDGES.get(network)
    end = nic(index, names.veth_host_name(stack, container, network), kind="veth",
              alias=names.endpoint_alias(stack, container, network), master=on.link.index if on else None,
              group=names.LINK_GROUP, hairpin=True if on else None, ipv6=False)
    return with_link(end, **link)


def inner_end(slot: int, container: str, network: str, *addresses: str, stack: str = "demo") -> Nic:
    """The container end `eth<slot>` (index slot + 2 in its namespace: lo is 1)."""
    return nic(slot + 2, names.container_ifname(slot), *addresses, kind="veth",
               alias=names.endpoint_alias(stack, container, network), group=names.LINK_GROUP)


WEB_FRONT = host_end(10, "web", "front")
WEB_BACK = host_end(11, "web", "back")
DB_BACK = host_end(12, "db", "back")
API_NET = host_end(13, "api", "net", stack="other")
HOST_ENDS = (WEB_FRONT, WEB_BACK, DB_BACK, API_NET)

WEB_ETH0 = inner_end(0, "web", "front", "10.88.1.10/24", "fd00:88:1::10/64")
WEB_ETH1 = inner_end(1, "web", "back", "10.88.2.10/24")
WEB_GATEWAYS = ((WEB_ETH0.link.index, "10.88.1.1"), (WEB_ETH0.link.index, "fd00:88:1::1"))


def web(*ends: Nic, gateways: Sequence[tuple[int, str]] = WEB_GATEWAYS, lo_up: bool = True) -> LinkDump:
    return linkdump(loopback(lo_up), *(ends or (WEB_ETH0, WEB_ETH1)), gateways=gateways)


def forged(stack: str, container: str, network: str) -> Nic:
    """A dummy link in a sandbox carrying another container's endpoint mark."""
    return nic(9, "x0", kind="dummy", alias=names.endpoint_alias(stack, container, network))


IN_SYNC: dict[str, LinkDump | None] = {
    "rc-demo_web": web(),
    "rc-demo_db": linkdump(loopback(), inner_end(0, "db", "back", "10.88.2.20/24")),
    "rc-other_api": linkdump(loopback(), inner_end(0, "api", "net", "10.88.9.10/24", stack="other"),
                             gateways=[(2, "10.88.9.1")]),
    "blue": linkdump(loopback()),  # someone else's namespace: not ours, ignored
}


def spaces(**dumps: LinkDump | None) -> dict[str, LinkDump | None]:
    """IN_SYNC with sandboxes of demo replaced, by container; None: a namespace file left
    without its namespace (it cannot be entered)."""
    return {**IN_SYNC, **{names.netns_name("demo", key): dump for key, dump in dumps.items()}}


def without(base: Mapping[str, LinkDump | None], *containers: str) -> dict[str, LinkDump | None]:
    gone = {names.netns_name("demo", c) for c in containers}
    return {name: dump for name, dump in base.items() if name not in gone}


class DumpedHost:
    """Stands in for the host's Netlink: observe only dumps it (as the kernel answers a dump
    of some links by name: those, the bridges they are ports of, their addresses, no routes)."""

    def __init__(self, dump: LinkDump):
        self._dump = dump

    def dump(self, names: frozenset[str] | None = None) -> LinkDump:
        if names is None:
            return self._dump
        named = {link.index for link in self._dump.links if link.name in names}
        links = tuple(link for link in self._dump.links if link.index in named or any(
            other.master == link.index for other in self._dump.links if other.index in named))
        return LinkDump(links, tuple(a for a in self._dump.addresses if a.index in {link.index for link in links}), ())


class Observe(Protocol):
    def __call__(self, host_ends: Sequence[Nic], namespaces: Mapping[str, LinkDump | None],
                 focus: Focus | None = None) -> SandboxObservation: ...


@pytest.fixture
def observe(monkeypatch: pytest.MonkeyPatch) -> Observe:
    """SandboxController.observe over a host holding the bridges and `host_ends`, and the
    namespaces of /run/netns as given (None: a file whose namespace cannot be entered)."""
    def run(host_ends: Sequence[Nic], namespaces: Mapping[str, LinkDump | None],
            focus: Focus | None = None) -> SandboxObservation:
        monkeypatch.setattr(netns, "list_names", lambda: sorted(namespaces))
        monkeypatch.setattr(netns, "exists", lambda name: name in namespaces)
        monkeypatch.setattr(netns, "dumps", lambda wanted: [(name, namespaces[name]) for name in wanted])
        host = linkdump(loopback(), UPLINK, *BRIDGES.values(), *host_ends, gateways=[(2, "192.168.1.1")])
        return SandboxController(cast(Netlink, DumpedHost(host))).observe(focus)
    return run


def made(container: str, network: str, ifname: str, *addresses: str) -> tuple[FieldRow, ...]:
    """Every field of a new endpoint, from nothing to the spec (an MTU of 1500 everywhere)."""
    values = {"host_name": names.veth_host_name("demo", container, network), "bridge": f"rc-demo-{network}",
              "host_mtu": 1500, "hairpin": True, "host_ipv6": False, "host_up": True, "ifname": ifname, "mtu": 1500,
              "addresses": list(addresses), "up": True}
    return tuple((path, None, value) for path, value in values.items())


ROUTE = "via 10.88.1.1 dev eth0"
ROUTE6 = "via fd00:88:1::1 dev eth0"
DRIFTED = "drifted from the spec"
WEB_ADDRESSES = ["10.88.1.10/24", "fd00:88:1::10/64"]
MADE_WEB_FRONT = made("web", "front", "eth0", *WEB_ADDRESSES)
NEW_WEB = [
    (Action.CREATE, KIND_SANDBOX, "demo/web", "not on the host", (("netns", None, "rc-demo_web"),)),
    (Action.CREATE, KIND_ENDPOINT, "demo/web/front", "not on the host", MADE_WEB_FRONT),
    (Action.CREATE, KIND_ENDPOINT, "demo/web/back", "not on the host", made("web", "back", "eth1", "10.88.2.10/24")),
    (Action.UPDATE, KIND_SANDBOX, "demo/web", "new sandbox",
     (("lo_up", False, True), ("default_route", None, ROUTE), ("default_route6", None, ROUTE6))),
]


CASES = [
    pytest.param((DB_BACK, API_NET), without(IN_SYNC, "web"), NEW_WEB, id="sandbox missing"),
    pytest.param((DB_BACK, API_NET), spaces(web=None), NEW_WEB, id="namespace file without its namespace"),
    pytest.param(HOST_ENDS, IN_SYNC, [], id="in sync"),
    pytest.param((WEB_BACK, DB_BACK, API_NET), spaces(web=web(WEB_ETH1, gateways=())), [
        (Action.CREATE, KIND_ENDPOINT, "demo/web/front", "not on the host", MADE_WEB_FRONT),
        (Action.UPDATE, KIND_SANDBOX, "demo/web", DRIFTED, (("default_route", None, ROUTE),
                                                             ("default_route6", None, ROUTE6))),
    ], id="veth pair deleted with its host end"),
    pytest.param((host_end(10, "web", "front", alias=None), WEB_BACK, DB_BACK, API_NET), IN_SYNC, [
        (Action.CREATE, KIND_ENDPOINT, "demo/web/front", "one end of the veth pair is gone", MADE_WEB_FRONT),
    ], id="host end lost its mark"),
    pytest.param(HOST_ENDS, spaces(web=web(with_link(WEB_ETH0, alias=None), WEB_ETH1)), [
        (Action.CREATE, KIND_ENDPOINT, "demo/web/front", "not on the host", MADE_WEB_FRONT),
        # Its host end, now claimed by no sandbox end, is an orphan (the reason says so).
        (Action.DELETE, KIND_ENDPOINT, "demo/web/front", "no sandbox holds its other end", ()),
    ], id="container end lost its mark"),
    pytest.param((host_end(10, "web", "front", master=None, hairpin=None), WEB_BACK, DB_BACK, API_NET), IN_SYNC, [
        (Action.UPDATE, KIND_ENDPOINT, "demo/web/front", DRIFTED,
         (("bridge", None, "rc-demo-front"), ("hairpin", False, True))),
    ], id="host end detached from the bridge"),
    pytest.param((host_end(10, "web", "front", master=6), WEB_BACK, DB_BACK, API_NET), IN_SYNC, [
        (Action.UPDATE, KIND_ENDPOINT, "demo/web/front", DRIFTED, (("bridge", "rc-demo-back", "rc-demo-front"),)),
    ], id="host end on another bridge"),
    pytest.param((WEB_FRONT, WEB_BACK, host_end(12, "db", "back", up=False, mtu=9000, hairpin=False), API_NET),
                 IN_SYNC, [
        (Action.UPDATE, KIND_ENDPOINT, "demo/db/back", DRIFTED,
         (("host_mtu", 9000, 1500), ("hairpin", False, True), ("host_up", False, True))),
    ], id="host end down, wrong mtu, no hairpin"),
    pytest.param((WEB_FRONT, WEB_BACK, host_end(12, "db", "back", ipv6=True), API_NET), IN_SYNC, [
        (Action.UPDATE, KIND_ENDPOINT, "demo/db/back", DRIFTED, (("host_ipv6", True, False),)),
    ], id="host end with IPv6 on (made by an older release, or switched on by hand)"),
    pytest.param((host_end(10, "web", "front", master=None, hairpin=None, ipv6=True), WEB_BACK, DB_BACK, API_NET),
                 IN_SYNC, [
        (Action.UPDATE, KIND_ENDPOINT, "demo/web/front", DRIFTED,
         (("bridge", None, "rc-demo-front"), ("hairpin", False, True), ("host_ipv6", True, False))),
    ], id="host end detached from the bridge, IPv6 on"),
    pytest.param(HOST_ENDS, spaces(web=web(inner_end(0, "web", "front", "10.88.1.99/24", "fd00:88:1::10/64"),
                                           WEB_ETH1)), [
        (Action.UPDATE, KIND_ENDPOINT, "demo/web/front", DRIFTED,
         (("addresses", ["10.88.1.99/24", "fd00:88:1::10/64"], WEB_ADDRESSES),)),
    ], id="wrong address inside"),
    pytest.param(HOST_ENDS, spaces(web=web(gateways=WEB_GATEWAYS[1:])), [
        (Action.UPDATE, KIND_SANDBOX, "demo/web", DRIFTED, (("default_route", None, ROUTE),)),
    ], id="default route missing"),
    pytest.param(HOST_ENDS, spaces(web=web(gateways=((WEB_ETH1.link.index, "10.88.2.1"), WEB_GATEWAYS[1]))), [
        (Action.UPDATE, KIND_SANDBOX, "demo/web", DRIFTED, (("default_route", "via 10.88.2.1 dev eth1", ROUTE),)),
    ], id="default route through the wrong network"),
    pytest.param(HOST_ENDS, spaces(web=web(inner_end(0, "web", "front", "10.88.1.10/24"), WEB_ETH1,
                                           gateways=WEB_GATEWAYS[:1])), [
        (Action.UPDATE, KIND_ENDPOINT, "demo/web/front", DRIFTED, (("addresses", WEB_ADDRESSES[:1], WEB_ADDRESSES),)),
        (Action.UPDATE, KIND_SANDBOX, "demo/web", DRIFTED, (("default_route6", None, ROUTE6),)),
    ], id="IPv6 disabled on a dual-stack eth0"),
    pytest.param(HOST_ENDS, spaces(web=web(with_link(WEB_ETH0, up=False), WEB_ETH1)), [
        (Action.UPDATE, KIND_ENDPOINT, "demo/web/front", DRIFTED, (("up", False, True),)),
        (Action.UPDATE, KIND_SANDBOX, "demo/web", DRIFTED, (("default_route", None, ROUTE),
                                                             ("default_route6", None, ROUTE6))),
    ], id="container end down, its routes gone"),
    pytest.param(HOST_ENDS, spaces(web=web(lo_up=False)), [
        (Action.UPDATE, KIND_SANDBOX, "demo/web", DRIFTED, (("lo_up", False, True),)),
    ], id="lo down"),
    pytest.param((*HOST_ENDS, host_end(14, "old", "back")),
                 {**IN_SYNC, "rc-demo_old": linkdump(loopback(), inner_end(0, "old", "back", "10.88.2.30/24"))}, [
        (Action.DELETE, KIND_SANDBOX, "demo/old", "no longer in the spec", (("netns", "rc-demo_old", None),)),
    ], id="container removed from the spec"),
    pytest.param((*HOST_ENDS, host_end(14, "web", "old")),
                 spaces(web=web(WEB_ETH0, WEB_ETH1, inner_end(2, "web", "old", "10.88.3.30/24"))), [
        (Action.DELETE, KIND_ENDPOINT, "demo/web/old", "no longer in the spec", ()),
    ], id="network removed from a container"),
    pytest.param((WEB_FRONT, WEB_BACK, DB_BACK, host_end(13, "api", "net", stack="other", master=None)),
                 {**IN_SYNC, "rc-other_api": linkdump(loopback(False))}, [], id="another stack's, drifted"),
    pytest.param((*HOST_ENDS, host_end(14, "gone", "back")), IN_SYNC, [
        (Action.DELETE, KIND_ENDPOINT, "demo/gone/back", "no sandbox holds its other end", ()),
    ], id="orphan host end"),
    pytest.param((*HOST_ENDS, host_end(14, "gone", "net", stack="other")), IN_SYNC, [],
                 id="another stack's orphan host end"),
    # A workload with CAP_NET_ADMIN aliases a link of its own namespace like another
    # container's endpoint: nobody's mark here (acting on it deleted the other's veth).
    pytest.param(HOST_ENDS, spaces(web=web(WEB_ETH0, WEB_ETH1, forged("other", "api", "net"))), [],
                 id="a forged mark of another stack's endpoint in a sandbox"),
    pytest.param(HOST_ENDS, spaces(web=web(WEB_ETH0, WEB_ETH1, forged("other", "api", "zz"))), [],
                 id="a forged mark of an endpoint of another stack's container on no network"),
    pytest.param(HOST_ENDS, spaces(web=web(WEB_ETH0, WEB_ETH1, forged("demo", "db", "back"))), [],
                 id="a forged mark of a sibling's endpoint in a sandbox"),
]


@pytest.mark.parametrize(("host_ends", "namespaces", "expected"), CASES)
def test_changes_take_the_sandboxes_to_the_spec(observe: Observe, host_ends: tuple[Nic, ...],
                                                namespaces: Mapping[str, LinkDump | None],
                                                expected: list[ChangeRow]) -> None:
    diff = diff_sandboxes(desired(), observe(host_ends, namespaces))
    assert diff.issues == []
    assert change_rows(diff) == expected


@pytest.mark.parametrize(("host_ends", "namespaces", "expected"), CASES)
@pytest.mark.parametrize("containers", [["web"], ["db"], ["old", "gone"], ["web", "db"]])
def test_a_focused_pass_makes_the_whole_diffs_changes_about_its_focus(
        observe: Observe, host_ends: tuple[Nic, ...], namespaces: Mapping[str, LinkDump | None],
        expected: list[ChangeRow], containers: list[str]) -> None:
    want = desired()
    whole = diff_sandboxes(want, observe(host_ends, namespaces))
    focus = focus_on(want.stacks, "demo", containers)
    focused = replace(want, focus=focus)
    about = [c for c in whole.changes if focus.has_container(c.key)]
    assert diff_sandboxes(focused, observe(host_ends, namespaces)).changes == about
    if Focus.on(want.stacks, focus.containers) is not None:  # the agent's focus: observed as focused
        assert diff_sandboxes(focused, observe(host_ends, namespaces, focus)).changes == about


def test_a_change_of_network_order_makes_both_pairs_anew(observe: Observe) -> None:
    web_back_first = {"networks": {"back": {"ip": "10.88.2.10"},
                                   "front": {"ip": "10.88.1.10", "ip6": "fd00:88:1::10"}}}
    swapped = {**DEMO, "containers": {"web": web_back_first, "db": DB}}
    diff = diff_sandboxes(desired(swapped), observe(HOST_ENDS, IN_SYNC))
    assert [(c.action, c.key, c.reason, c.disruptive) for c in diff.changes] == [
        (Action.RECREATE, "demo/web/back", "interface name changed", True),
        (Action.RECREATE, "demo/web/front", "interface name changed", True),
        (Action.UPDATE, "demo/web", DRIFTED, False),
    ]
    assert diff.changes[-1].fields[0].new == "via 10.88.1.1 dev eth1"


def test_down_deletes_every_sandbox_of_the_stack_and_its_orphans_only(observe: Observe) -> None:
    observed = observe((*HOST_ENDS, host_end(14, "gone", "back")), IN_SYNC)
    diff = diff_sandboxes(build_desired({"stacks": {}, "scope": ["demo"]}), observed)
    assert [(c.action, c.kind, c.key) for c in diff.changes] == [
        (Action.DELETE, KIND_SANDBOX, "demo/db"), (Action.DELETE, KIND_SANDBOX, "demo/web"),
        (Action.DELETE, KIND_ENDPOINT, "demo/gone/back")]


def test_observation_reads_owners_and_addresses_back_from_the_marks(observe: Observe) -> None:
    observed = observe((*HOST_ENDS, host_end(14, "gone", "back")), IN_SYNC)
    assert observed.owned_stacks() == {"demo", "other"}
    assert list(observed.stray_host_ends) == ["demo/gone/back"]
    assert observed.bridges == {"rc-demo-front": 5, "rc-demo-back": 6, "rc-other-net": 8}
    assert observed.live_addresses() == {
        ("demo", "web", "front"): IPv4Address("10.88.1.10"), ("demo", "web", "back"): IPv4Address("10.88.2.10"),
        ("demo", "db", "back"): IPv4Address("10.88.2.20"), ("other", "api", "net"): IPv4Address("10.88.9.10")}
    assert observed.live_addresses6() == {("demo", "web", "front"): IPv6Address("fd00:88:1::10")}


def test_a_sandbox_is_observed_in_the_spec_shape() -> None:
    host = linkdump(*BRIDGES.values(), *HOST_ENDS)
    ends = {"demo/web/front": WEB_FRONT.link, "demo/web/back": WEB_BACK.link}
    sandbox = observe_sandbox("demo", "web", "rc-demo_web", web(), ends, host.by_index())
    assert (sandbox.state.lo_up, sandbox.state.default_route, sandbox.state.default_route6) == (True, ROUTE, ROUTE6)
    front = sandbox.endpoints["front"]
    assert (front.host_index, front.inner_index) == (10, 2)
    assert front.state is not None
    assert front.state.field_values() == {"host_name": names.veth_host_name("demo", "web", "front"),
                                          "bridge": "rc-demo-front", "host_mtu": 1500, "hairpin": True,
                                          "host_ipv6": False, "host_up": True, "ifname": "eth0", "mtu": 1500,
                                          "addresses": WEB_ADDRESSES, "up": True}
