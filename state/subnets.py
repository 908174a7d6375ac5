"""Subnets from a pool (pure): a network declared without a subnet gets one, and keeps it.
A network keeps the subnet it was given (its lease in the store, else the subnet of its live
bridge, so a lost store is rebuilt from the kernel) as long as no other network of ours holds
it; a new one gets the lowest block of the pool that overlaps nothing taken: the host's own
addresses and routes, every other network's subnet (declared or allocated) and what was
handed out earlier in the same pass. A route the host adds later over a network's subnet does
not move the network (its containers would get new addresses): the host check reports the
overlap, as for a declared subnet, and nothing is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

NetworkKey = tuple[str, str]
"""(stack, network)."""


@dataclass(frozen=True)
class SubnetPool:
    """Docker's and Podman's shape: a base block cut into subnets of one prefix length."""

    base: IPv4Network
    size: int
    """Prefix length of each subnet handed out."""

    @classmethod
    def parse(cls, text: str) -> SubnetPool:
        """"base=10.89.0.0/16,size=24" (dockerd's --default-address-pool), or just the base,
        cut into /24s. A bad value is a ValueError naming what was expected."""
        fields = dict(part.partition("=")[::2] for part in text.split(",")) if "=" in text else {"base": text}
        expected = f"{text!r}: expected base=CIDR[,size=PREFIX-LENGTH], e.g. base=10.89.0.0/16,size=24"
        if set(fields) - {"base", "size"} or "base" not in fields:
            raise ValueError(expected)
        try:
            base = IPv4Network(fields["base"].strip())
            size = int(fields.get("size", "24"))
        except ValueError:
            raise ValueError(expected) from None
        if not base.prefixlen <= size <= 30:
            raise ValueError(f"{text!r}: size must be between the base's prefix length "
                             f"({base.prefixlen}) and 30 (room for a gateway and a container)")
        return cls(base, size)


@dataclass(frozen=True)
class SubnetRequest:
    key: NetworkKey
    sticky: tuple[IPv4Network, ...] = ()
    """Subnets this network held, preferred in order: its lease, then its live bridge's."""


class PoolExhausted(Exception):
    def __init__(self, key: NetworkKey, pool: SubnetPool):
        self.key = key
        super().__init__(f"no free /{pool.size} subnet left in the subnet pool {pool.base} for network "
                         f"'{key[1]}': set networks.{key[1]}.subnet, or choose a larger pool "
                         "(--subnet-pool, RECONCILE_SUBNET_POOL)")


def choose_subnet(pool: SubnetPool, taken: Iterable[IPv4Network]) -> IPv4Network | None:
    """The lowest block of the pool that overlaps none of `taken`, or None."""
    blocking = [t for t in taken if t.overlaps(pool.base)]
    for candidate in pool.base.subnets(new_prefix=pool.size):
        if not any(candidate.overlaps(t) for t in blocking):
            return candidate
    return None


def allocate_subnets(requests: Sequence[SubnetRequest], pool: SubnetPool, ours: Iterable[IPv4Network],
                     host: Iterable[IPv4Network]) -> dict[NetworkKey, IPv4Network]:
    """A subnet for every request, deterministic in request order. Sticky subnets are kept
    first, so a new network never takes the one an existing network is about to keep; one that
    another network of ours holds is given up, one the host overlaps is not."""
    held = list(ours)
    result: dict[NetworkKey, IPv4Network] = {}
    for request in requests:
        kept = next((s for s in request.sticky if not any(s.overlaps(t) for t in held)), None)
        if kept is not None:
            result[request.key] = kept
            held.append(kept)
    held += host
    for request in (r for r in requests if r.key not in result):
        chosen = choose_subnet(pool, held)
        if chosen is None:
            raise PoolExhausted(request.key, pool)
        result[request.key] = chosen
        held.append(chosen)
    return result
