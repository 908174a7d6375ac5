"""The firewall tests' stacks and a pure pass of the controller against a FakeBackend (no tests
here): plan, converge, drift by hand."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controllers.base import Desired, Diff
from controllers.firewall import Work, diff_firewall
from controllers.firewall_observed import FirewallObservation, observe_firewall
from kernel.netfilter import Chain, Ruleset
from kernel.netfilter_listeners import Listener
from tests.firewall_support import FakeBackend, build_desired

FRONT = {"subnet": "10.88.1.0/24", "bridge": "rcbr0"}
BACK = {"subnet": "10.88.2.0/24", "bridge": "rcbr1", "internal": True}
DEMO = {"networks": {"front": FRONT, "back": BACK},
        "containers": {"web": {"networks": {"front": {"ip": "10.88.1.10"}, "back": {"ip": "10.88.2.10"}},
                               "ports": ["8080:80", "127.0.0.1:5353:53/udp"]}}}
OTHER = {"networks": {"net": {"subnet": "10.88.9.0/24", "bridge": "rcbr9"}},
         "containers": {"api": {"networks": {"net": {"ip": "10.88.9.10"}},
                                "ports": ["9090:90"]}}}
ROUTE_LOCALNET_ON = {"rcbr0": "1", "rcbr9": "1"}


def desired(stacks: Mapping[str, Any], scope: list[str] | None = None) -> Desired:
    return build_desired({"stacks": stacks, "scope": scope if scope is not None else list(stacks)})


def observed(backend: FakeBackend, listeners: tuple[Listener, ...] = (),
             route_localnet: Mapping[str, str] = ROUTE_LOCALNET_ON) -> FirewallObservation:
    return observe_firewall(backend.observe(), listeners, route_localnet, backend)


def plan(want: Desired, backend: FakeBackend, **kwargs: Any) -> Diff:
    return diff_firewall(want, observed(backend, **kwargs), backend)


def converge(want: Desired, backend: FakeBackend) -> Diff:
    """One pass, as FirewallController.apply runs the ops (one batch for all changes)."""
    result = plan(want, backend)
    assert not result.issues
    backend.apply([op for c in result.changes if isinstance(c.desired, Work) for op in c.desired.ops])
    return result


def heads(result: Diff) -> list[tuple[str, str, str]]:
    return [(c.action.value, c.kind, c.key) for c in result.changes]


def edit(backend: FakeBackend, table: str, chain: str, change: Callable[[list[str]], list[str]]) -> None:
    """Drift by hand: rewrite one chain's rules (or drop the chain when `change` returns None)."""
    tables = {t: dict(chains) for t, chains in backend.ruleset.tables.items()}
    rules = change(list(tables[table][chain].rules))
    if rules is None:
        del tables[table][chain]
    else:
        tables[table][chain] = Chain(chain, tuple(rules))
    backend.ruleset = Ruleset(tables)


BOTH = {"stacks": {"demo": DEMO, "other": OTHER}}
