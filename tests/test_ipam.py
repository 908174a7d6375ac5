"""IPAM (pure): static honoured, sticky leases, never reserved or taken addresses."""

from __future__ import annotations

from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N
from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state.ipam import Exhausted, Request, Subnet, assign

NET = N("10.0.0.0/29")  # hosts .1-.6
GW = A("10.0.0.1")
OTHER = N("10.0.1.0/29")  # GW is not in it: every host is free


def req(name: str, static: str | None = None, subnet: N = NET) -> Request:
    return Request(("s", name, "n"), subnet, GW, A(static) if static else None)


def key(name: str) -> tuple[str, str, str]:
    return ("s", name, "n")


@pytest.mark.parametrize(
    ("requests", "leases", "live", "in_use", "expected"),
    [
        # lowest free host, skipping the gateway
        ([req("a"), req("b")], {}, {}, {}, {"a": "10.0.0.2", "b": "10.0.0.3"}),
        # a static address is never handed to another endpoint, whatever the order
        ([req("a"), req("b", "10.0.0.2")], {}, {}, {}, {"a": "10.0.0.3", "b": "10.0.0.2"}),
        # a new endpoint listed first does not take a running one's lease or live address
        ([req("new"), req("a"), req("b")], {key("a"): A("10.0.0.2")}, {key("b"): A("10.0.0.3")}, {},
         {"new": "10.0.0.4", "a": "10.0.0.2", "b": "10.0.0.3"}),
        # a lease is sticky even when a lower address is free
        ([req("a")], {key("a"): A("10.0.0.5")}, {}, {}, {"a": "10.0.0.5"}),
        # lost store: the address live in the kernel is kept
        ([req("a")], {}, {key("a"): A("10.0.0.4")}, {}, {"a": "10.0.0.4"}),
        # the lease wins over the live address (the kernel is repaired to the lease)
        ([req("a")], {key("a"): A("10.0.0.5")}, {key("a"): A("10.0.0.4")}, {}, {"a": "10.0.0.5"}),
        # a lease that a new static address took is given up
        ([req("a"), req("b", "10.0.0.2")], {key("a"): A("10.0.0.2")}, {}, {}, {"a": "10.0.0.3", "b": "10.0.0.2"}),
        # addresses in use elsewhere on the network are skipped
        ([req("a")], {}, {}, {NET: {A("10.0.0.2"), A("10.0.0.3")}}, {"a": "10.0.0.4"}),
        # a stale lease outside the (changed) subnet is ignored
        ([req("a")], {key("a"): A("10.9.0.5")}, {}, {}, {"a": "10.0.0.2"}),
        # the broadcast address is never handed out, nor the network address
        ([req("a")], {key("a"): A("10.0.0.7")}, {key("a"): A("10.0.0.0")}, {}, {"a": "10.0.0.2"}),
        # new ones fill the holes between kept and foreign addresses, lowest first, in order
        ([req("a"), req("b"), req("c"), req("d")], {key("b"): A("10.0.0.3")}, {}, {NET: {A("10.0.0.5")}},
         {"a": "10.0.0.2", "b": "10.0.0.3", "c": "10.0.0.4", "d": "10.0.0.6"}),
        # each subnet's new addresses from its own lowest, whatever the order of the requests
        ([req("a"), req("x", subnet=OTHER), req("b"), req("y", subnet=OTHER)], {}, {}, {},
         {"a": "10.0.0.2", "x": "10.0.1.1", "b": "10.0.0.3", "y": "10.0.1.2"}),
    ],
)
def test_assign(requests, leases, live, in_use, expected) -> None:
    result = assign(requests, leases, live, in_use)
    assert {k[1]: str(v) for k, v in result.items()} == expected


SUBNETS = (N("10.0.2.0/28"), N("10.0.3.0/29"))  # hosts .1-.14 and .1-.6, .1 the gateway


@given(st.lists(st.sampled_from(SUBNETS), min_size=1, max_size=16),
       st.dictionaries(st.integers(0, 15), st.integers(0, 15)), st.sets(st.integers(1, 6), max_size=3))
def test_new_addresses_are_the_lowest_free_in_request_order(subnets: list[N], leased: dict[int, int],
                                                              foreign: set[int]) -> None:
    """However kept leases and foreign addresses leave holes, each subnet's new addresses are its
    lowest hosts left, in the order of its requests, with the requests of two subnets interleaved
    (one walk of each subnet for them all); a pass runs out only where more containers ask for a
    subnet than it has hosts free of the gateway and foreign addresses."""
    requests = [Request(("s", f"c{i}", "n"), subnet, subnet[1], None) for i, subnet in enumerate(subnets)]
    # .0-.15 from each subnet's start: the /29's leases past .7 are stale ones, outside it
    leases = {requests[i].key: requests[i].subnet.network_address + host for i, host in leased.items()
              if i < len(requests)}
    in_use: dict[Subnet, set[A]] = {subnet: {subnet[host] for host in foreign} for subnet in SUBNETS}
    try:
        result = assign(requests, leases, {}, in_use)
    except Exhausted as exc:
        (subnet,) = {r.subnet for r in requests if r.key == exc.key}
        room = set(subnet.hosts()) - {subnet[1]} - in_use[subnet]
        assert len([r for r in requests if r.subnet == subnet]) > len(room)
        return
    for subnet in SUBNETS:
        mine = [r for r in requests if r.subnet == subnet]
        kept = {result[r.key] for r in mine if r.key in leases and result[r.key] == leases[r.key]}
        taken = {subnet[1], *in_use[subnet], *kept}
        assert len(kept) == len([r for r in mine if result[r.key] in kept])  # none handed out twice
        free = [a for a in subnet.hosts() if a not in taken]
        fresh = [result[r.key] for r in mine if result[r.key] not in kept]
        assert fresh == free[:len(fresh)]


def test_exhausted_names_the_subnet() -> None:
    with pytest.raises(Exhausted, match=r"no free address left in 10.0.0.0/29 for container f"):
        assign([req(c) for c in "abcdef"], {}, {}, {})


NET6 = IPv6Network("fd00:1::/125")  # fd00:1::1-::7 (no broadcast in IPv6)
GW6 = IPv6Address("fd00:1::1")


def req6(name: str, static: str | None = None) -> Request:
    return Request(("s", name, "n"), NET6, GW6, IPv6Address(static) if static else None)


def a6(text: str) -> IPv6Address:
    return IPv6Address(text)


@pytest.mark.parametrize(
    ("requests", "leases", "live", "in_use", "expected"),
    [
        # lowest free host, skipping the network (Subnet-Router anycast) address and the gateway
        ([req6("a"), req6("b")], {}, {}, {}, {"a": "fd00:1::2", "b": "fd00:1::3"}),
        # a static address is never handed to another endpoint, whatever the order
        ([req6("a"), req6("b", "fd00:1::2")], {}, {}, {}, {"a": "fd00:1::3", "b": "fd00:1::2"}),
        # a lease is sticky; then the live kernel address (lost store)
        ([req6("a")], {key("a"): a6("fd00:1::5")}, {key("a"): a6("fd00:1::4")}, {}, {"a": "fd00:1::5"}),
        ([req6("a")], {}, {key("a"): a6("fd00:1::4")}, {}, {"a": "fd00:1::4"}),
        # in use elsewhere, stale (another subnet), the network address and the gateway: skipped
        ([req6("a")], {}, {}, {NET6: {a6("fd00:1::2")}}, {"a": "fd00:1::3"}),
        ([req6("a")], {key("a"): a6("fd00:9::5")}, {key("a"): a6("fd00:1::")}, {}, {"a": "fd00:1::2"}),
        ([req6("a")], {key("a"): a6("fd00:1::1")}, {}, {}, {"a": "fd00:1::2"}),
        # the last address is a host in IPv6 (no broadcast)
        ([req6("a")], {key("a"): a6("fd00:1::7")}, {}, {}, {"a": "fd00:1::7"}),
    ],
)
def test_assign_ipv6(requests, leases, live, in_use, expected) -> None:
    result = assign(requests, leases, live, in_use)
    assert {k[1]: str(v) for k, v in result.items()} == expected


def test_ipv6_free_hosts_are_walked_lazily_on_a_large_subnet() -> None:
    subnet = IPv6Network("fd00:2::/64")
    request = Request(("s", "a", "n"), subnet, subnet.network_address + 1, None)
    assert assign([request], {}, {}, {}) == {("s", "a", "n"): IPv6Address("fd00:2::2")}


def test_ipv6_exhausted_names_the_subnet() -> None:
    with pytest.raises(Exhausted, match=r"no free address left in fd00:1::/125 for container g"):
        assign([req6(c) for c in "abcdefg"], {}, {}, {})
