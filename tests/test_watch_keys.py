"""Mapping changes and kernel events to the agent's keys (pure)."""

from __future__ import annotations

from controllers.change import Action, Change
from kernel.events import ExitEvent, LinkEvent, NetnsGone, Overflow, RuleEvent
from kernel.events_wire import NFPROTO_INET
from reconcile.watch.keys import (
    HOST_KEY,
    Key,
    concerns,
    container_key,
    covers,
    key_of_change,
    key_of_event,
    network_key,
)

WEB = container_key("s", "web")
FRONT = network_key("s", "front")


def change(kind: str, key: str) -> Change:
    return Change(Action.UPDATE, kind, key)


def test_a_containers_sandbox_veths_cgroup_and_ports_are_one_resource() -> None:
    for kind, key in [("sandbox", "s/web"), ("endpoint", "s/web/front"), ("cgroup", "s/web"),
                      ("container", "s/web"), ("port", "s/web/8080/tcp")]:
        assert key_of_change(change(kind, key)) == WEB
    assert key_of_change(change("network", "s/front")) == FRONT
    assert key_of_change(change("firewall", "s/front")) == FRONT
    assert key_of_change(change("sysctl", "net.ipv4.ip_forward")) == HOST_KEY
    assert key_of_change(change("firewall", "")) == HOST_KEY


def test_a_resource_brings_what_it_stands_on_and_nothing_of_its_siblings() -> None:
    assert concerns(WEB, change("endpoint", "s/web/front"))
    assert concerns(WEB, change("network", "s/front"))  # its bridge, deleted with it
    assert concerns(WEB, change("firewall", ""))  # the shared skeleton
    assert not concerns(WEB, change("container", "s/db"))
    assert not concerns(WEB, change("container", "t/web"))
    assert not concerns(FRONT, change("container", "s/web"))
    assert concerns(Key("s"), change("container", "s/db"))
    assert concerns(HOST_KEY, change("container", "t/web"))


def test_coverage_for_dropping_stale_keys() -> None:
    assert covers(Key("s"), WEB) and covers(WEB, WEB) and covers(HOST_KEY, WEB)
    assert not covers(WEB, FRONT) and not covers(Key("t"), WEB)
    assert not covers(HOST_KEY, Key("", "files"))  # a file change queued meanwhile is never dropped


def test_link_events_map_by_alias_or_sandbox_name() -> None:
    pids: dict[int, Key] = {}
    bridge = LinkEvent(None, "address", True, 7, "rc-s-front", "reconcile/v1 network s/front")
    veth = LinkEvent(None, "link", True, 9, "rcv0123456789", "reconcile/v1 endpoint s/web/front")
    inside = LinkEvent("rc-s_web", "route", True, 2, "eth0", None)
    foreign = LinkEvent(None, "link", True, 11, "docker0", None)
    foreign_ns = LinkEvent("canary-ns", "link", False, 3, "v0", None)
    assert key_of_event(bridge, pids) == FRONT
    assert key_of_event(veth, pids) == WEB
    assert key_of_event(inside, pids) == WEB
    assert key_of_event(foreign, pids) is None and key_of_event(foreign_ns, pids) is None


def test_rule_and_exit_events() -> None:
    pids = {4242: WEB}
    assert key_of_event(RuleEvent("nat", "RECONCILE-DNAT", True, "reconcile/v1 port s/web/8080/tcp"), pids) == WEB
    assert key_of_event(RuleEvent("filter", "RECONCILE-FORWARD", True, "reconcile/v1 network s/front"), pids) == FRONT
    assert key_of_event(RuleEvent("nat", "PREROUTING", True, "reconcile/v1 chains"), pids) == HOST_KEY
    assert key_of_event(RuleEvent("nat", "RECONCILE-DNAT", True, None), pids) == HOST_KEY
    assert key_of_event(RuleEvent("filter", "DOCKER", True, None), pids) is None
    assert key_of_event(RuleEvent("reconcile", None, True, None, NFPROTO_INET), pids) == HOST_KEY
    assert key_of_event(RuleEvent("reconcile", "FORWARD", True, None, NFPROTO_INET), pids) == HOST_KEY
    assert key_of_event(RuleEvent("reconcile", "RECONCILE-DNAT", True, "reconcile/v1 port s/web/8080/tcp",
                                  NFPROTO_INET), pids) == WEB
    assert key_of_event(RuleEvent("firewalld", "filter_FORWARD", True, None, NFPROTO_INET), pids) is None
    assert key_of_event(RuleEvent("filter", "INPUT", False, "ssh from the admin"), pids) is None
    assert key_of_event(ExitEvent(4242), pids) == WEB and key_of_event(ExitEvent(1), pids) is None


def test_a_gone_sandbox_is_its_containers_and_an_overflow_is_everything() -> None:
    assert key_of_event(NetnsGone("rc-s_web"), {}) == WEB
    assert key_of_event(NetnsGone("canary-ns"), {}) is None
    assert key_of_event(Overflow(None, "nftables"), {}) == HOST_KEY
