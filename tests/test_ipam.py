"""IPAM (pure): static honoured, sticky leases, never reserved or taken addresses."""

from __future__ import annotations

from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N
from ipaddress import IPv6Address, IPv6Network

import pytest

from state.ipam import Exhausted, Request, assign

NET = N("10.0.0.0/29")  # hosts .1-.6
GW = A("10.0.0.1")


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
    ],
)
def test_assign(requests, leases, live, in_use, expected) -> None:
    result = assign(requests, leases, live, in_use)
    assert {k[1]: str(v) for k, v in result.items()} == expected


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


def test_ipv6_first_free_is_lazy_on_a_large_subnet() -> None:
    subnet = IPv6Network("fd00:2::/64")
    request = Request(("s", "a", "n"), subnet, subnet.network_address + 1, None)
    assert assign([request], {}, {}, {}) == {("s", "a", "n"): IPv6Address("fd00:2::2")}


def test_ipv6_exhausted_names_the_subnet() -> None:
    with pytest.raises(Exhausted, match=r"no free address left in fd00:1::/125 for container g"):
        assign([req6(c) for c in "abcdefg"], {}, {}, {})
