"""Subnets from the pool (pure): the choice, stickiness, exhaustion, and the pool's syntax."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from state.subnets import PoolExhausted, SubnetPool, SubnetRequest, allocate_subnets, choose_subnet

POOL = SubnetPool(IPv4Network("10.89.0.0/16"), 24)
TINY = SubnetPool(IPv4Network("10.89.0.0/23"), 24)


def nets(*texts: str) -> list[IPv4Network]:
    return [IPv4Network(t) for t in texts]


@pytest.mark.parametrize(("pool", "taken", "expected"), [
    (POOL, [], "10.89.0.0/24"),
    (POOL, ["10.89.0.0/24"], "10.89.1.0/24"),
    (POOL, ["10.89.0.0/24", "10.89.2.0/24"], "10.89.1.0/24"),
    (POOL, ["10.89.0.128/25"], "10.89.1.0/24"),  # a smaller route inside a block blocks it
    (POOL, ["10.89.0.0/23"], "10.89.2.0/24"),  # a larger one blocks every block it covers
    (POOL, ["10.0.0.0/8"], None),  # a route covering the whole pool
    (POOL, ["10.88.0.0/16", "192.168.0.0/16"], "10.89.0.0/24"),  # outside the pool: no effect
    (TINY, ["10.89.0.0/24", "10.89.1.0/24"], None),
    (SubnetPool(IPv4Network("172.30.0.0/16"), 28), ["172.30.0.0/28"], "172.30.0.16/28"),
])
def test_choose_subnet(pool: SubnetPool, taken: list[str], expected: str | None) -> None:
    chosen = choose_subnet(pool, nets(*taken))
    assert chosen == (IPv4Network(expected) if expected else None)


A, B, C = ("s", "a"), ("s", "b"), ("t", "c")


@pytest.mark.parametrize(("requests", "ours", "expected"), [
    ([SubnetRequest(A), SubnetRequest(B)], [], {A: "10.89.0.0/24", B: "10.89.1.0/24"}),
    # A lease is kept, and a new network does not take it even when listed first.
    ([SubnetRequest(B), SubnetRequest(A, tuple(nets("10.89.0.0/24")))], [],
     {A: "10.89.0.0/24", B: "10.89.1.0/24"}),
    # The live bridge's subnet when the store lost the lease; a sticky subnet outside the pool stays.
    ([SubnetRequest(A, tuple(nets("10.99.7.0/24")))], [], {A: "10.99.7.0/24"}),
    # The lease first, then the bridge's.
    ([SubnetRequest(A, tuple(nets("10.89.5.0/24", "10.89.6.0/24")))], [], {A: "10.89.5.0/24"}),
    ([SubnetRequest(A, tuple(nets("10.89.5.0/24", "10.89.6.0/24")))], nets("10.89.5.0/24"), {A: "10.89.6.0/24"}),
    # A sticky subnet another network of ours holds meanwhile is given up for a free one.
    ([SubnetRequest(A, tuple(nets("10.89.0.0/24")))], nets("10.89.0.0/24"), {A: "10.89.1.0/24"}),
    # Two networks claiming the same subnet (a store out of step): the first keeps it.
    ([SubnetRequest(A, tuple(nets("10.89.3.0/24"))), SubnetRequest(C, tuple(nets("10.89.3.0/24")))], [],
     {A: "10.89.3.0/24", C: "10.89.0.0/24"}),
])
def test_allocate_subnets(requests: list[SubnetRequest], ours: list[IPv4Network],
                          expected: dict[tuple[str, str], str]) -> None:
    assert allocate_subnets(requests, POOL, ours, []) == {k: IPv4Network(v) for k, v in expected.items()}


def test_the_host_blocks_new_subnets_but_never_moves_a_sticky_one() -> None:
    """A route over a network's subnet added later: the network stays (the host check reports
    the overlap, nothing is recreated); a new network avoids it."""
    route = nets("10.89.0.0/23")
    assert allocate_subnets([SubnetRequest(A, tuple(nets("10.89.0.0/24"))), SubnetRequest(B)], POOL, [], route) == {
        A: IPv4Network("10.89.0.0/24"), B: IPv4Network("10.89.2.0/24")}


def test_an_exhausted_pool_names_the_network_and_the_pool() -> None:
    with pytest.raises(PoolExhausted) as caught:
        allocate_subnets([SubnetRequest(A), SubnetRequest(B), SubnetRequest(C)], TINY, [], [])
    assert caught.value.key == C
    assert str(caught.value) == ("no free /24 subnet left in the subnet pool 10.89.0.0/23 for network 'c': set "
                                 "networks.c.subnet, or choose a larger pool (--subnet-pool, RECONCILE_SUBNET_POOL)")


@pytest.mark.parametrize(("text", "expected"), [
    ("base=10.89.0.0/16,size=24", POOL),
    ("10.89.0.0/16", POOL),
    ("base=172.30.0.0/16,size=28", SubnetPool(IPv4Network("172.30.0.0/16"), 28)),
    ("base=10.89.0.0/16,size=8", "'base=10.89.0.0/16,size=8': size must be between the base's prefix length (16) "
                                 "and 30 (room for a gateway and a container)"),
    ("base=10.89.0.1/16", "'base=10.89.0.1/16': expected base=CIDR[,size=PREFIX-LENGTH], e.g. "
                          "base=10.89.0.0/16,size=24"),
    ("size=24", "'size=24': expected base=CIDR[,size=PREFIX-LENGTH], e.g. base=10.89.0.0/16,size=24"),
    ("base=10.89.0.0/16,mask=24", "'base=10.89.0.0/16,mask=24': expected base=CIDR[,size=PREFIX-LENGTH], e.g. "
                                  "base=10.89.0.0/16,size=24"),
])
def test_pool_syntax(text: str, expected: SubnetPool | str) -> None:
    if isinstance(expected, SubnetPool):
        assert SubnetPool.parse(text) == expected
        return
    with pytest.raises(ValueError) as caught:
        SubnetPool.parse(text)
    assert str(caught.value) == expected
