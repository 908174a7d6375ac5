"""Container addresses of a pass (reconcile.engine.addresses, pure): a focused pass (the watch
agent's repair of some containers) decides its focus's addresses as a whole pass would, keeps
every other endpoint's static or leased one, and decides them all, as a whole pass, when one of
the others has neither (a lost store). The focused cases marked KEPT run twice: as a CLI pass, and
with what the endpoints hold kept from the focused pass before (the watch agent's HeldAddresses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest

from controllers.base import Focus
from controllers.sandbox import SandboxObservation
from reconcile.engine import addresses
from reconcile.engine.addresses import HeldAddresses, assign_addresses
from reconcile.engine.subnets import with_subnets
from specs.model import Stack
from state.ipam import A, EndpointKey, Request
from tests.firewall_support import build_stack

STACK = build_stack("s", {"networks": {"net": {"subnet": "10.9.0.0/29"}},
                          "containers": {"a": {"networks": ["net"]}, "b": {"networks": {"net": {"ip": "10.9.0.3"}}},
                                         "c": {"networks": ["net"]}, "d": {"networks": ["net"]}}})
OTHER = build_stack("o", {"networks": {"net": {"subnet": "10.9.0.0/29"}}, "containers": {"x": {"networks": ["net"]}}})
NOTHING_LIVE = SandboxObservation({}, {}, {})
NO_LEASES6: dict[EndpointKey, IPv6Address] = {}  # one object, as LeaseCache hands out until a write


def _ip(last: int) -> IPv4Address:
    return IPv4Address(f"10.9.0.{last}")


def _leases(**by_container: int) -> dict[EndpointKey, IPv4Address]:
    return {("s", name, "net"): _ip(last) for name, last in by_container.items()}


def _assigned(leases: Mapping[EndpointKey, IPv4Address], focus: Focus | None, stacks: tuple[Stack, ...] = (STACK,),
              kept: HeldAddresses | None = None) -> dict[EndpointKey, IPv4Address]:
    addresses, addresses6, issues = assign_addresses(list(stacks), leases, NO_LEASES6, NOTHING_LIVE, focus, kept)
    assert addresses6 == {} and issues == []
    return addresses


def _kept_by_a_pass(leases: Mapping[EndpointKey, IPv4Address], stacks: tuple[Stack, ...] = (STACK,)) -> HeldAddresses:
    """What the watch agent keeps after a focused pass (on d) over these stacks with these leases."""
    kept = HeldAddresses()
    _assigned(leases, Focus.on({s.name: s for s in stacks}, [("s", "d")]), stacks, kept)
    return kept


@dataclass(frozen=True)
class _Live(SandboxObservation):
    """An observation with these IPv4 addresses live (the diff tests build whole sandboxes)."""

    live: Mapping[EndpointKey, IPv4Address] = field(default_factory=dict)

    def live_addresses(self) -> dict[EndpointKey, IPv4Address]:
        return dict(self.live)


KEPT = pytest.mark.parametrize("kept", [False, True], ids=["cli", "kept"])


FOCUS_C = Focus.on({"s": STACK}, [("s", "c")])


@pytest.mark.parametrize("leases", [
    _leases(a=2, c=4, d=5),  # every one leased: each keeps its own
    _leases(a=2, d=5),  # c new: it gets the first free address, as in a whole pass
    _leases(a=4, c=2, d=5),  # leases in any order
    _leases(a=2, c=3, d=5),  # c's lease is b's static address now: c moves, as in a whole pass
])
@KEPT
def test_a_focused_pass_decides_its_focus_as_a_whole_pass_would(leases: dict[EndpointKey, IPv4Address],
                                                                kept: bool) -> None:
    whole = _assigned(leases, None)
    assert _assigned(leases, FOCUS_C, kept=_kept_by_a_pass(leases) if kept else None) == whole
    assert whole[("s", "b", "net")] == _ip(3) and len(set(whole.values())) == len(whole)


@KEPT
def test_others_keep_their_leases_and_statics_however_the_focus_is_decided(kept: bool) -> None:
    leases = _leases(a=6, d=2)
    focused = _assigned(leases, FOCUS_C, kept=_kept_by_a_pass(leases) if kept else None)
    assert [focused[("s", name, "net")] for name in ("a", "b", "d")] == [_ip(6), _ip(3), _ip(2)]
    assert focused[("s", "c", "net")] not in {_ip(6), _ip(3), _ip(2)}


@KEPT
def test_with_another_unleased_the_focused_pass_decides_every_address_as_a_whole_pass(kept: bool) -> None:
    leases = _leases(c=4)  # a and d lost their leases (a lost store)
    assert _assigned(leases, FOCUS_C, kept=_kept_by_a_pass(leases) if kept else None) == _assigned(leases, None)


@KEPT
def test_another_stacks_lease_is_never_handed_out(kept: bool) -> None:
    leases = {**_leases(a=2, d=5), ("o", "x", "net"): _ip(4)}
    focused = _assigned(leases, FOCUS_C, kept=_kept_by_a_pass(leases) if kept else None)
    assert focused[("s", "c", "net")] == _ip(6)  # 2, 3 (b's static), 4 (o/x's), 5 taken
    assert focused == _assigned(leases, None)


def test_an_exhausted_subnet_is_an_issue_at_the_container() -> None:
    full = build_stack("s", {"networks": {"net": {"subnet": "10.9.0.0/30"}},
                             "containers": {"a": {"networks": ["net"]}, "c": {"networks": ["net"]}}})
    focus = Focus.on({"s": full}, [("s", "c")])
    for chosen in (None, focus):
        addresses, _, issues = assign_addresses([full], _leases(a=2), {}, NOTHING_LIVE, chosen)
        assert addresses == {} and [(i.stack, i.loc) for i in issues] == [("s", ("containers", "c", "networks", "net"))]


def test_a_focused_pass_on_a_dual_stack_network_decides_both_families_as_a_whole_pass() -> None:
    """The IPv6 addresses of the endpoints on dual-stack networks only, each family kept and
    decided as the other: a static ip6 is honoured, another's lease is never handed out."""
    dual = build_stack("s", {"networks": {"net": {"subnet": "10.9.0.0/29", "subnet6": "fd00:9::/125"},
                                          "v4": {"subnet": "10.9.1.0/29"}},
                             "containers": {"a": {"networks": ["net", "v4"]},
                                            "b": {"networks": {"net": {"ip6": "fd00:9::3"}}},
                                            "c": {"networks": ["net", "v4"]}}})
    leases = {**_leases(a=2, b=3, c=4), ("s", "a", "v4"): IPv4Address("10.9.1.2")}
    leases6 = {("s", "a", "net"): IPv6Address("fd00:9::2")}  # c's is new
    focus = Focus.on({"s": dual}, [("s", "c")])
    whole = assign_addresses([dual], leases, leases6, NOTHING_LIVE, None)
    focused = assign_addresses([dual], leases, leases6, NOTHING_LIVE, focus)
    assert focused == whole and whole[2] == []
    assert whole[1] == {("s", "a", "net"): IPv6Address("fd00:9::2"), ("s", "b", "net"): IPv6Address("fd00:9::3"),
                        ("s", "c", "net"): IPv6Address("fd00:9::4")}
    assert whole[0][("s", "c", "v4")] == IPv4Address("10.9.1.3")


def test_a_focused_pass_asks_for_its_own_endpoints_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The others' addresses are looked up, not requested: beside a thousand containers a
    request each was ~40% of a focused pass's desired state. Both families, one call each."""
    dual = build_stack("s", {"networks": {"net": {"subnet": "10.9.0.0/29", "subnet6": "fd00:9::/125"}},
                             "containers": {name: {"networks": ["net"]} for name in ("a", "b", "c")}})
    asked: list[list[EndpointKey]] = []
    real = addresses.assign

    def recorded(requests: list[Request[A]], *rest: Any) -> dict[EndpointKey, A]:
        asked.append([r.key for r in requests])
        return real(requests, *rest)

    monkeypatch.setattr(addresses, "assign", recorded)
    leases6 = {("s", name, "net"): IPv6Address(f"fd00:9::{last}") for name, last in (("a", 2), ("b", 3))}
    assign_addresses([dual], _leases(a=2, b=3), leases6, NOTHING_LIVE, Focus.on({"s": dual}, [("s", "c")]))
    assert asked == [[("s", "c", "net")], [("s", "c", "net")]]


def test_an_address_two_endpoints_hold_stays_taken_when_the_focus_holds_it_too() -> None:
    """c's lease is also d's: c moves off it, as in a whole pass (one holder leaving it does not
    free it for the other)."""
    leases = _leases(a=2, c=5, d=5)
    for kept in (None, _kept_by_a_pass(leases)):
        focused = _assigned(leases, FOCUS_C, kept=kept)
        assert focused[("s", "d", "net")] == _ip(5) and focused[("s", "c", "net")] == _ip(4)


def test_what_is_kept_is_worked_out_once_for_the_same_specs_and_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repair after a pass looks at its own endpoints only; new leases (another object, as
    LeaseCache hands out once they are written) or another spec are worked out again."""
    worked = _counted(monkeypatch)
    leases = _leases(a=2, c=4, d=5)
    kept = _kept_by_a_pass(leases)
    assert len(worked) == 2  # a focused pass keeps both families
    assert _assigned(leases, FOCUS_C, kept=kept)[("s", "c", "net")] == _ip(4)
    assert len(worked) == 2
    moved = _leases(a=2, c=6, d=4)  # written since: c's lease is now 6
    assert _assigned(moved, FOCUS_C, kept=kept)[("s", "c", "net")] == _ip(6)
    assert len(worked) == 3  # IPv4's: the IPv6 leases are the same
    grown = build_stack("s", {**STACK.model_dump(exclude_unset=True),
                              "containers": {**STACK.model_dump(exclude_unset=True)["containers"],
                                             "e": {"networks": {"net": {"ip": "10.9.0.4"}}}}})
    focused = _assigned(moved, Focus.on({"s": grown}, [("s", "d")]), (grown,), kept)
    assert focused[("s", "d", "net")] == _ip(5)  # 4 is e's static address now: d moves
    assert len(worked) == 5


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Stack, ...]]:
    """The stacks each time what their endpoints hold is worked out."""
    worked: list[tuple[Stack, ...]] = []
    real = addresses._held

    def counted(family: Any, stacks: Any, leases: Any) -> Any:
        worked.append(tuple(stacks))
        return real(family, stacks, leases)

    monkeypatch.setattr(addresses, "_held", counted)
    return worked


def test_a_passs_copies_of_a_stack_keep_what_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pass copies a stack whose containers take an image's settings (merged in, after its
    pooled subnet is filled in): their networks stay the spec's, and what their endpoints hold
    is not worked out again."""
    pooled = build_stack("s", {"networks": {"net": {}}, "containers": {name: {"networks": ["net"]} for name in "acd"}})
    leases = _leases(a=2, c=4, d=5)

    def copied() -> Stack:
        stack = with_subnets({"s": pooled}, {("s", "net"): IPv4Network("10.9.0.0/29")})["s"]
        merged = stack.containers["c"].model_copy(update={"command": ["true"]})
        return stack.model_copy(update={"containers": {**stack.containers, "c": merged}})

    worked = _counted(monkeypatch)
    kept = HeldAddresses()
    for _ in range(3):
        stack = copied()
        assert _assigned(leases, Focus.on({"s": stack}, [("s", "c")]), (stack,), kept)[("s", "c", "net")] == _ip(4)
    assert len(worked) == 2  # once a family
    stack = with_subnets({"s": pooled}, {("s", "net"): IPv4Network("10.9.1.0/29")})["s"]  # another subnet
    moved = {("s", "a", "net"): IPv4Address("10.9.1.2"), ("s", "d", "net"): IPv4Address("10.9.1.3")}
    assert _assigned(moved, Focus.on({"s": stack}, [("s", "c")]), (stack,), kept)[("s", "c", "net")] == \
        IPv4Address("10.9.1.4")
    assert len(worked) == 3  # IPv4's (no IPv6 subnet, the same IPv6 leases)


def test_a_pass_over_everything_forgets_what_was_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    worked = _counted(monkeypatch)
    leases = _leases(a=2, c=4, d=5)
    kept = _kept_by_a_pass(leases)
    _assigned(leases, None, kept=kept)
    _assigned(leases, FOCUS_C, kept=kept)
    assert len(worked) == 4  # kept by the first focused pass, worked out again after the whole one


@KEPT
def test_an_address_still_live_on_an_endpoint_that_holds_another_is_free(kept: bool) -> None:
    """a's static address is now 2, but its namespace still holds 3 (not yet repaired): 3 is
    free for c, as in a whole pass, which sees a's 3 replaced by its 2."""
    stack = build_stack("s", {"networks": {"net": {"subnet": "10.9.0.0/29"}},
                              "containers": {"a": {"networks": {"net": {"ip": "10.9.0.2"}}},
                                             "c": {"networks": ["net"]}, "d": {"networks": ["net"]}}})
    leases, live = _leases(a=3, d=4), _Live({}, {}, {}, {("s", "a", "net"): _ip(3)})
    focus = Focus.on({"s": stack}, [("s", "c")])
    held = HeldAddresses() if kept else None
    if held is not None:
        assign_addresses([stack], leases, NO_LEASES6, live, Focus.on({"s": stack}, [("s", "d")]), held)
    whole = assign_addresses([stack], leases, NO_LEASES6, live, None)[0]
    focused = assign_addresses([stack], leases, NO_LEASES6, live, focus, held)[0]
    assert whole[("s", "c", "net")] == _ip(3) and focused == whole


def test_a_network_made_dual_stack_is_worked_out_again() -> None:
    """The same containers (their networks the same mappings), one network given an IPv6 subnet:
    every endpoint on it now holds an IPv6 address, the others' leased, the focus's decided."""
    v4 = build_stack("s", {"networks": {"net": {"subnet": "10.9.0.0/29"}},
                           "containers": {name: {"networks": ["net"]} for name in "acd"}})
    dual = v4.model_copy(update={"networks": {"net": v4.networks["net"].model_copy(
        update={"subnet6": IPv6Network("fd00:9::/125"), "gateway6": IPv6Address("fd00:9::1")})}})
    leases, leases6 = _leases(a=2, c=4, d=5), {("s", name, "net"): IPv6Address(f"fd00:9::{last}")
                                               for name, last in (("a", 2), ("d", 3))}
    kept = HeldAddresses()
    for stack in (v4, dual):
        found6 = assign_addresses([stack], leases, leases6, NOTHING_LIVE, Focus.on({"s": stack}, [("s", "c")]), kept)[1]
    assert found6 == assign_addresses([dual], leases, leases6, NOTHING_LIVE, None)[1]
    assert sorted(found6) == [("s", name, "net") for name in "acd"]
