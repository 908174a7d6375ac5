"""The [::1] proxies' diff, pure (no kernel): which ports get one, what each runs, and the
changes from observed proxies (none, a wrong one, a duplicate, one of a removed port, one of a
stack out of scope), and a foreign listener on [::1] as a located conflict."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from controllers.change import Action
from controllers.firewall_rules import PortKey
from controllers.proxy import LOOPBACK6, ProxyObservation, Work, diff_proxies, wanted_relays
from kernel.netfilter_listeners import Listener
from kernel.proxy import Relay, RunningProxy
from kernel.runtime import ProcessHandle
from tests.firewall_plans import desired
from tests.focus import focus_on

DUAL = {"subnet": "10.88.1.0/24", "bridge": "rcbr0", "subnet6": "fd00:88:1::/64"}
V4_ONLY = {"subnet": "10.88.2.0/24", "bridge": "rcbr1"}
INTERNAL = {"subnet": "10.88.3.0/24", "bridge": "rcbr2", "subnet6": "fd00:88:3::/64", "internal": True}
STACK = {"networks": {"front": DUAL, "plain": V4_ONLY, "back": INTERNAL},
         "containers": {
             "web": {"networks": {"front": {"ip": "10.88.1.10", "ip6": "fd00:88:1::10"}},
                     "ports": ["8080:80", "5353:53/udp", "127.0.0.1:8443:443", "10.0.0.1:9090:80"]},
             "old": {"networks": {"plain": {"ip": "10.88.2.10"}}, "ports": ["8081:80"]},
             "vault": {"networks": {"back": {"ip": "10.88.3.10", "ip6": "fd00:88:3::10"}}}}}
"""web publishes over IPv6 on two ports (and two narrowed to an IPv4 host_ip); old is on an
IPv4-only network; vault is internal."""

WEB = IPv6Address("fd00:88:1::10")
TCP = Relay("tcp", LOOPBACK6, 8080, WEB, 80)
UDP = Relay("udp", LOOPBACK6, 5353, WEB, 53)
TCP_KEY = PortKey("demo", "web", None, 8080, "tcp")
UDP_KEY = PortKey("demo", "web", None, 5353, "udp")
MARK = "reconcile/v1 port demo/web/8080/tcp"


def running(relay: Relay, mark: str = MARK, pid: int = 100, inode: int = 7) -> RunningProxy:
    return RunningProxy(mark, relay.argv(mark), ProcessHandle(pid, 1), (), frozenset({inode}))


def observation(*proxies: tuple[PortKey, RunningProxy], foreign: tuple[Listener, ...] = ()) -> ProxyObservation:
    by_key: dict[PortKey, tuple[RunningProxy, ...]] = {}
    for key, found in proxies:
        by_key[key] = (*by_key.get(key, ()), found)
    return ProxyObservation(by_key, foreign)


def test_only_ports_published_over_ipv6_on_every_address_get_a_proxy() -> None:
    wants = wanted_relays(desired({"demo": STACK}))
    assert {key: (want.relay, want.loc) for key, want in wants.items()} == {
        TCP_KEY: (TCP, ("containers", "web", "ports", 0)),
        UDP_KEY: (UDP, ("containers", "web", "ports", 1)),
    }
    assert wanted_relays(desired({"demo": STACK}, scope=[])) == {}


def test_a_relay_runs_socat_marked_by_its_port_owner() -> None:
    assert TCP.argv(MARK) == (MARK, "-ly", "TCP6-LISTEN:8080,bind=[::1],fork,su=nobody,reuseaddr,backlog=128",
                              "TCP6:[fd00:88:1::10]:80")
    assert UDP.argv("m") == ("m", "-ly", "-T30", "UDP6-RECVFROM:5353,bind=[::1],fork,su=nobody",
                             "UDP6-SENDTO:[fd00:88:1::10]:53")
    assert Relay("tcp", LOOPBACK6, 1, IPv4Address("10.0.0.2"), 2).argv("m")[-1] == "TCP4:10.0.0.2:2"


UDP_MARK = "reconcile/v1 port demo/web/5353/udp"
IN_SYNC = ((TCP_KEY, running(TCP)), (UDP_KEY, running(UDP, UDP_MARK, pid=101, inode=8)))


@pytest.mark.parametrize(("observed", "expected"), [
    pytest.param((), [(Action.CREATE, UDP_KEY.key, "not running", 0, True),
                      (Action.CREATE, TCP_KEY.key, "not running", 0, True)], id="nothing runs"),
    pytest.param(IN_SYNC, [], id="in sync"),
    pytest.param((IN_SYNC[0], (UDP_KEY, running(Relay("udp", LOOPBACK6, 5353, WEB, 54), UDP_MARK))),
                 [(Action.UPDATE, UDP_KEY.key, "differs from the spec", 1, True)], id="wrong target"),
    pytest.param((*IN_SYNC, (TCP_KEY, running(TCP, pid=102))),
                 [(Action.UPDATE, TCP_KEY.key, "runs more than once", 1, False)], id="twice"),
    pytest.param((*IN_SYNC, (PortKey("demo", "web", None, 7000, "tcp"), running(TCP, "m7000"))),
                 [(Action.DELETE, "demo/web/7000/tcp", "no longer in the spec", 1, False)], id="removed"),
    pytest.param((*IN_SYNC, (PortKey("other", "web", None, 7000, "tcp"), running(TCP, "o7000"))),
                 [], id="another stack's"),
])
def test_changes_start_and_stop_what_differs(observed: tuple[tuple[PortKey, RunningProxy], ...],
                                             expected: list[tuple[Action, str, str, int, bool]]) -> None:
    diff = diff_proxies(desired({"demo": STACK}), observation(*observed))
    assert diff.issues == []
    got = []
    for change in diff.changes:
        assert isinstance(change.desired, Work)
        got.append((change.action, change.key, change.reason, len(change.desired.stop),
                    change.desired.start is not None))
    assert got == expected


def test_a_focused_pass_makes_the_whole_diffs_changes_about_its_focus() -> None:
    drifted = observation((TCP_KEY, running(TCP)), (PortKey("demo", "gone", None, 7000, "tcp"), running(TCP, "m")))
    want = desired({"demo": STACK})
    whole = diff_proxies(want, drifted).changes
    assert {c.key for c in whole} == {UDP_KEY.key, "demo/gone/7000/tcp"}
    for containers in (["web"], ["gone"], ["old", "vault"]):
        focus = focus_on(want.stacks, "demo", containers)
        about = [c for c in whole if focus.has_container(c.key)]
        assert diff_proxies(replace(want, focus=focus), drifted).changes == about


def test_down_stops_every_proxy_of_the_stack_in_scope() -> None:
    diff = diff_proxies(desired({}, scope=["demo"]), observation(*IN_SYNC))
    assert [(c.action, c.key) for c in diff.changes] == [(Action.DELETE, UDP_KEY.key), (Action.DELETE, TCP_KEY.key)]


def test_a_host_without_ipv6_loopback_wants_no_proxy() -> None:
    without = replace(observation(IN_SYNC[0]), loopback6=False)
    assert [(c.action, c.key) for c in diff_proxies(desired({"demo": STACK}), without).changes] == [
        (Action.DELETE, TCP_KEY.key)]


def test_a_foreign_listener_on_ipv6_loopback_is_a_located_conflict() -> None:
    squatter = Listener("tcp", LOOPBACK6, 8080, 55, pid=42, command="nginx")
    elsewhere = Listener("udp", LOOPBACK6, 8080, 56)  # another protocol: not in the way
    diff = diff_proxies(desired({"demo": STACK}), observation(foreign=(squatter, elsewhere)))
    assert [(i.stack, i.loc, i.message) for i in diff.issues] == [
        ("demo", ("containers", "web", "ports", 0),
         "host port [::1]:8080/tcp is in use: nginx (pid 42) listening on [::1]:8080/tcp")]
