"""/etc/hosts of every container of a stack, rendered once per network (issue 15): every
container sharing a network with it, itself included, in the stack's order, under several
networks, peers sharing two of them (the first one in the container's own order names them),
hostnames other than the key, dual-stack networks beside IPv4-only ones, a container on a
network no one else is on, and one on none; a member's aliases on a network, named by its
line there or by a line of their own where another network gives its line; a container's
extra_hosts first, host-gateway its default route's gateways; the members of one network
with the same extra_hosts lines share one text; lines kept from an earlier pass serve only while every
member (and its aliases) is as it was."""

from __future__ import annotations

import gc
from ipaddress import IPv4Address, IPv4Network, IPv6Address

import pytest

from controllers.container_files import LOCALHOST, RenderedLines, hosts_files
from reconcile.engine import subnets as subnets_module
from reconcile.engine.subnets import with_subnets
from specs.model import Attachment, Stack

STACK = Stack.model_validate({
    "name": "t",
    "networks": {"front": {"subnet": "10.1.0.0/24", "subnet6": "fd00:1::/64"},
                 "back": {"subnet": "10.2.0.0/24"},
                 "data": {"subnet": "10.3.0.0/24", "subnet6": "fd00:3::/64"},
                 "side": {"subnet": "10.4.0.0/24"}},
    "containers": {
        "web": {"command": "x", "networks": ["front", "back"], "hostname": "www", "default_route": "back"},
        "api": {"command": "x", "networks": ["back", "data", "front"]},
        "db": {"command": "x", "networks": ["data"], "hostname": "postgres"},
        "cache": {"command": "x", "networks": ["back", "side"], "default_route": "side"},
        "solo": {"command": "x", "networks": []},
    },
})
HOST = {"web": 2, "api": 3, "db": 4, "cache": 5}
SUBNET = {"front": 1, "back": 2, "data": 3, "side": 4}
V4 = {("t", key, net): IPv4Address(f"10.{SUBNET[net]}.0.{HOST[key]}")
      for key, container in STACK.containers.items() for net in container.networks}
V6 = {("t", key, net): IPv6Address(f"fd00:{SUBNET[net]}::{HOST[key]}")
      for key, container in STACK.containers.items() for net in container.networks
      if STACK.networks[net].subnet6 is not None}


@pytest.mark.parametrize(("key", "expected"), [
    # itself on its default route's network; api shares front and back with it: front first
    ("web", "10.2.0.2\twww web\n10.1.0.3\tapi\n10.2.0.5\tcache\nfd00:1::2\twww web\nfd00:1::3\tapi\n"),
    # the stack's order, each peer on the first network of api's own order it shares
    ("api", "10.2.0.2\twww web\n10.2.0.3\tapi\n10.3.0.4\tpostgres db\n10.2.0.5\tcache\n"
            "fd00:1::2\twww web\nfd00:3::3\tapi\nfd00:3::4\tpostgres db\n"),
    ("db", "10.3.0.3\tapi\n10.3.0.4\tpostgres db\nfd00:3::3\tapi\nfd00:3::4\tpostgres db\n"),
    # itself on a network it alone is on; no dual-stack network: no IPv6 lines
    ("cache", "10.2.0.2\twww web\n10.2.0.3\tapi\n10.4.0.5\tcache\n"),
    ("solo", ""),
])
def test_hosts_files(key: str, expected: str) -> None:
    assert hosts_files(STACK, V4, V6)[key] == LOCALHOST + expected


def test_the_members_of_a_network_share_one_text() -> None:
    """At a thousand containers each file is 16 KB: one string per network, not per member."""
    stack = Stack.model_validate({"name": "s", "networks": {"n": {"subnet": "10.9.0.0/24"}},
                                  "containers": {f"c{i}": {"command": "x", "networks": ["n"]} for i in range(3)}})
    files = hosts_files(stack, {("s", f"c{i}", "n"): IPv4Address(f"10.9.0.{i + 2}") for i in range(3)}, {})
    assert files["c0"] == LOCALHOST + "10.9.0.2\tc0\n10.9.0.3\tc1\n10.9.0.4\tc2\n"
    assert files["c0"] is files["c1"] is files["c2"]


ALIASED = Stack.model_validate({
    "name": "t",
    "networks": {"front": {"subnet": "10.1.0.0/24", "subnet6": "fd00:1::/64"}, "back": {"subnet": "10.2.0.0/24"}},
    "containers": {
        "web": {"command": "x", "networks": {"front": {"aliases": ["www"]}, "back": {}},
                "extra_hosts": ["mirror:10.9.9.9", "host.docker.internal:host-gateway", "six=[fd00:9::9]"]},
        "db": {"command": "x", "networks": {"front": {}, "back": {"aliases": ["postgres", "db"]}}},
        "cache": {"command": "x", "networks": {"back": {"aliases": ["redis"]}}},
        "queue": {"command": "x", "networks": ["back"]},
    },
})
ALIASED_HOST = {"web": 2, "db": 3, "cache": 4, "queue": 5}
ALIASED_V4 = {("t", key, net): IPv4Address(f"10.{SUBNET[net]}.0.{ALIASED_HOST[key]}")
              for key, container in ALIASED.containers.items() for net in container.networks}
ALIASED_V6 = {("t", key, "front"): IPv6Address(f"fd00:1::{ALIASED_HOST[key]}")
              for key, container in ALIASED.containers.items() if "front" in container.networks}
BACK = "10.2.0.2\tweb\n10.2.0.3\tdb postgres\n10.2.0.4\tcache redis\n10.2.0.5\tqueue\n"


@pytest.mark.parametrize(("key", "expected"), [
    # extra_hosts first, as given; host-gateway: front's gateway and gateway6 (dual-stack); then
    # db's line from front (first shared) and its alias on back on a line of its own
    ("web", "10.9.9.9\tmirror\n10.1.0.1\thost.docker.internal\nfd00:1::1\thost.docker.internal\nfd00:9::9\tsix\n"
            "10.1.0.2\tweb www\n10.1.0.3\tdb\n10.2.0.3\tpostgres\n10.2.0.4\tcache redis\n10.2.0.5\tqueue\n"
            "fd00:1::2\tweb www\nfd00:1::3\tdb\n"),
    # itself too: its line from front (its default route), its alias on back after it; an
    # alias that is its own key is not repeated
    ("db", "10.1.0.2\tweb www\n10.1.0.3\tdb\n10.2.0.3\tpostgres\n10.2.0.4\tcache redis\n10.2.0.5\tqueue\n"
           "fd00:1::2\tweb www\nfd00:1::3\tdb\n"),
    # on back only: www (web's alias on front) is not there
    ("cache", BACK),
    ("queue", BACK),
])
def test_aliases_and_extra_hosts(key: str, expected: str) -> None:
    assert hosts_files(ALIASED, ALIASED_V4, ALIASED_V6)[key] == LOCALHOST + expected


def test_members_with_the_same_extra_hosts_share_one_text_others_have_theirs() -> None:
    """The same host-gateway entry in every service of a thousand is one text, not a thousand."""
    files = hosts_files(ALIASED, ALIASED_V4, ALIASED_V6)
    assert files["cache"] is files["queue"]
    stack = _with(ALIASED, cache={"extra_hosts": ALIASED.containers["web"].extra_hosts[:1]})
    files = hosts_files(stack, ALIASED_V4, ALIASED_V6)
    assert (files["cache"], files["queue"]) == (LOCALHOST + "10.9.9.9\tmirror\n" + BACK, LOCALHOST + BACK)
    mirror = ALIASED.containers["web"].extra_hosts[:1]
    files = hosts_files(_with(ALIASED, cache={"extra_hosts": mirror}, queue={"extra_hosts": mirror}),
                        ALIASED_V4, ALIASED_V6)
    assert files["cache"] is files["queue"] and files["cache"] == LOCALHOST + "10.9.9.9\tmirror\n" + BACK


def _with(stack: Stack, **changed: dict[str, object]) -> Stack:
    return stack.model_copy(update={"containers": {**stack.containers, **{
        key: stack.containers[key].model_copy(update=fields) for key, fields in changed.items()}}})


@pytest.mark.parametrize(("stack", "v4", "v6"), [
    (STACK, V4, V6),  # nothing changed: the kept lines are the answer
    (Stack.model_validate(STACK.model_dump()), dict(V4), dict(V6)),  # equal specs and addresses read again
    (STACK, {**V4, ("t", "api", "back"): IPv4Address("10.2.0.9")}, V6),  # a member's new address
    (STACK, V4, {**V6, ("t", "db", "data"): IPv6Address("fd00:3::9")}),  # the same, IPv6 only
    (_with(STACK, db={"hostname": "pg"}), V4, V6),  # a member's new hostname
    (_with(STACK, cache={"networks": {}}), V4, V6),  # a member gone from the networks
    (_with(STACK, db={"networks": {"data": Attachment(aliases=["pg"])}}), V4, V6),  # a member's new alias
    (Stack.model_validate({**STACK.model_dump(), "name": "u"}),  # another stack of the same networks
     {("u", *key[1:]): a for key, a in V4.items()}, {("u", *key[1:]): a for key, a in V6.items()}),
])
def test_lines_kept_from_an_earlier_pass_serve_only_while_their_members_are_as_they_were(
        stack: Stack, v4: dict[tuple[str, str, str], IPv4Address], v6: dict[tuple[str, str, str], IPv6Address]) -> None:
    rendered = RenderedLines()
    hosts_files(STACK, V4, V6, rendered=rendered)
    assert hosts_files(stack, v4, v6, rendered=rendered) == hosts_files(stack, v4, v6)


def test_kept_lines_are_not_rendered_again_while_nothing_changed() -> None:
    """What the kept lines save (a thousand addresses turned into text) is not done again; the
    least recently used network's are dropped beyond the limit."""
    rendered = RenderedLines()
    kept = rendered.lines(STACK, "data", V4, 4)
    members = rendered._kept[("t", "data", 4)].members
    assert rendered.lines(STACK, "data", dict(V4), 4) is kept  # the same stack: its addresses compared
    copy = Stack.model_validate(STACK.model_dump())  # another pass's equal copy: its members compared
    assert rendered.lines(copy, "data", dict(V4), 4) is kept
    assert rendered._kept[("t", "data", 4)].members is members  # not the pass's equal new tuple
    assert rendered.lines(STACK, "data", V6, 6) is not kept  # each family its own
    moved = rendered.lines(STACK, "data", {**V4, ("t", "db", "data"): IPv4Address("10.3.0.9")}, 4)
    assert moved is not kept and rendered.lines(STACK, "data", V4, 4) is not moved
    kept = rendered.lines(STACK, "data", V4, 4)
    others = [Stack.model_validate({**STACK.model_dump(), "name": f"s{i}"}) for i in range(RenderedLines.LIMIT)]
    for other in others:
        rendered.lines(other, "side", {(other.name, "cache", "side"): IPv4Address("10.4.0.5")}, 4)
    assert rendered.lines(STACK, "data", V4, 4) is not kept


def test_a_changed_alias_renders_its_own_network_again_and_no_other() -> None:
    rendered = RenderedLines()
    rendered.lines(STACK, "data", V4, 4)
    side = rendered.lines(STACK, "side", V4, 4)
    aliased = _with(STACK, db={"networks": {"data": Attachment(aliases=["pg"])}})
    assert "10.3.0.4\tpostgres db pg\n" in rendered.lines(aliased, "data", V4, 4).text
    assert rendered.lines(aliased, "side", V4, 4) is side


def test_a_stack_with_pooled_subnets_is_the_same_object_from_pass_to_pass_while_it_and_they_are() -> None:
    """Each pass fills a stack's pooled subnets in; while the stack (frozen) and its subnets are
    those of the pass before, it gets the same copy, so the kept lines' check by identity holds
    for it as for a stack that declares its subnets. The copy goes with its stack."""
    pooled = Stack.model_validate({"name": "p", "networks": {"net": {}},
                                   "containers": {"a": {"command": "true", "networks": ["net"]}}})
    subnets = {("p", "net"): IPv4Network("10.9.0.0/29")}
    first = with_subnets({"p": pooled}, subnets)["p"]
    assert with_subnets({"p": pooled}, dict(subnets))["p"] is first
    assert first.networks["net"].subnet == IPv4Network("10.9.0.0/29")
    moved = with_subnets({"p": pooled}, {("p", "net"): IPv4Network("10.9.1.0/29")})["p"]
    assert moved is not first and moved.networks["net"].gateway == IPv4Address("10.9.1.1")
    equal = Stack.model_validate(pooled.model_dump())  # an edit that changed nothing: another object
    assert with_subnets({"p": equal}, subnets)["p"] is not first
    rendered = RenderedLines()
    address = {("p", "a", "net"): IPv4Address("10.9.0.2")}
    lines = rendered.lines(with_subnets({"p": equal}, subnets)["p"], "net", address, 4)
    kept = rendered._kept[("p", "net", 4)]
    assert rendered.lines(with_subnets({"p": equal}, subnets)["p"], "net", dict(address), 4) is lines
    assert rendered._kept[("p", "net", 4)] is kept  # not rendered again: the check by identity held
    assert kept.stack() is with_subnets({"p": equal}, subnets)["p"]
    assert "p" in subnets_module._resolved
    del equal, pooled, first, moved
    gc.collect()
    assert "p" not in subnets_module._resolved  # gone with its stack
