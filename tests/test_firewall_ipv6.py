"""The firewall's IPv6 side, pure (no kernel): v6 rules render as ip6tables-save and nft print
them back (texts read from the kernel here), where each backend places them, a dual-stack stack
converges and then has nothing to change, ipv6_nat toggles the masquerade alone, published
ports get their v6 DNAT (not with an IPv4 host_ip), conntrack flushes and listener conflicts
per family."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any

import pytest

from controllers.change import FieldChange
from controllers.firewall import Work
from controllers.firewall_rules import NFT_LAYOUT
from kernel.netfilter import Family, Iface, Rule, render_iptables
from kernel.netfilter_conntrack import FlowFilter, flush
from kernel.netfilter_listeners import Listener
from kernel.netfilter_nft import Nftables, render_nft
from tests.fake_nft import FakeNft
from tests.firewall_plans import converge, desired, heads, observed, plan
from tests.firewall_support import FakeBackend

FRONT6 = {"subnet": "10.88.1.0/24", "bridge": "rcbr0", "subnet6": "fd00:88:1::/64", "ipv6_nat": True}
BACK6 = {"subnet": "10.88.2.0/24", "bridge": "rcbr1", "subnet6": "fd00:88:2::/64", "internal": True}
DUAL = {"networks": {"front": FRONT6, "back": BACK6},
        "containers": {"web": {"networks": {"front": {"ip": "10.88.1.10", "ip6": "fd00:88:1::10"},
                                            "back": {"ip": "10.88.2.10", "ip6": "fd00:88:2::10"}},
                               "ports": ["8080:80", "127.0.0.1:5353:53/udp"]}}}
"""A dual-stack stack: a routed network with ipv6_nat, an internal one, a port on every address
(v4 and v6 DNAT) and one narrowed to an IPv4 address (v4 only)."""

DNAT6 = Rule("nat", "RECONCILE-DNAT", "DNAT", "reconcile/v1 port demo/web/8080/tcp", protocol="tcp", dport=8080,
             destination=IPv6Network("::1/128"), destination_negated=True,
             to_destination=(IPv6Address("fd00:88:1::10"), 80))
MASQ6 = Rule("nat", "RECONCILE-SNAT", "MASQUERADE", "m6", source=IPv6Network("fd00:1::/64"),
             out_iface=Iface("rcbr0", negated=True))
HAIRPIN6 = Rule("nat", "RECONCILE-SNAT", "MASQUERADE", "h6", source=IPv6Network("fd00:1::/64"),
                out_iface=Iface("rcbr0"), ctstate=("DNAT",))
NARROW6 = Rule("nat", "RECONCILE-DNAT", "DNAT", "p6b", destination=IPv6Network("2001:db8::1/128"), protocol="udp",
               dport=53, to_destination=(IPv6Address("fd00:1::10"), 5353))


@pytest.mark.parametrize(("rule", "iptables", "nft"), [
    (DNAT6, '! -d ::1/128 -p tcp -m tcp --dport 8080 -m comment --comment "reconcile/v1 port demo/web/8080/tcp" '
            "-j DNAT --to-destination [fd00:88:1::10]:80",
     'ip6 daddr != ::1 tcp dport 8080 dnat ip6 to [fd00:88:1::10]:80 comment "reconcile/v1 port demo/web/8080/tcp"'),
    (MASQ6, "-s fd00:1::/64 ! -o rcbr0 -m comment --comment m6 -j MASQUERADE",
     'ip6 saddr fd00:1::/64 oifname != "rcbr0" masquerade comment "m6"'),
    (HAIRPIN6, "-s fd00:1::/64 -o rcbr0 -m conntrack --ctstate DNAT -m comment --comment h6 -j MASQUERADE",
     'ip6 saddr fd00:1::/64 oifname "rcbr0" ct status dnat masquerade comment "h6"'),
    (NARROW6, "-d 2001:db8::1/128 -p udp -m udp --dport 53 -m comment --comment p6b -j DNAT "
              "--to-destination [fd00:1::10]:5353",
     'ip6 daddr 2001:db8::1 udp dport 53 dnat ip6 to [fd00:1::10]:5353 comment "p6b"'),
])
def test_v6_rules_render_as_the_kernel_prints_them(rule: Rule, iptables: str, nft: str) -> None:
    """Texts as ip6tables-save and `nft list` (1.0.6) printed them for these rules."""
    assert rule.family is Family.IPV6
    assert render_iptables(rule) == iptables
    assert render_nft(rule) == nft
    nft_backend = Nftables(NFT_LAYOUT, FakeNft())
    assert nft_backend.is_ipv6("nat", nft) and not nft_backend.is_ipv6("nat", "tcp dport 1 dnat ip to 1.2.3.4:5")


def test_families_and_placement() -> None:
    """A rule without addresses is for both families: iptables places it in both families'
    tables, nftables once in its inet table; a rule mixing families is refused."""
    both = Rule("filter", "RECONCILE-ACCEPT", "ACCEPT", "c", in_iface=Iface("rcbr0"))
    assert both.family is Family.BOTH
    assert FakeBackend().tables("filter", both.family) == ("filter", "ip6 filter")
    assert FakeBackend().tables("nat", Family.IPV6) == ("ip6 nat",)
    assert FakeBackend().tables("nat", Family.IPV4) == ("nat",)
    assert Nftables(NFT_LAYOUT, FakeNft()).tables("nat", Family.IPV6) == ("nat",)
    with pytest.raises(ValueError, match="cannot mix IPv4 and IPv6"):
        Rule("nat", "X", "DNAT", "c", destination=IPv6Network("::1/128"), to_destination=(IPv4Address("10.0.0.1"), 1))


def _v6_rules(backend: FakeBackend) -> dict[str, dict[str, tuple[str, ...]]]:
    return {table: {name: chain.rules for name, chain in chains.items() if chain.rules}
            for table, chains in backend.ruleset.tables.items() if table.startswith("ip6 ")}


def test_a_dual_stack_stack_converges_then_has_nothing_to_change() -> None:
    backend = FakeBackend()
    first = converge(desired({"demo": DUAL}), backend)
    assert heads(first) == [("create", "firewall", "chains"), ("create", "firewall", "demo/back"),
                            ("create", "firewall", "demo/front"), ("create", "port", "demo/web/127.0.0.1:5353/udp"),
                            ("create", "port", "demo/web/8080/tcp")]
    assert plan(desired({"demo": DUAL}), backend).changes == []
    v6 = _v6_rules(backend)
    assert v6["ip6 nat"]["RECONCILE-DNAT"] == (render_iptables(DNAT6),)  # the 127.0.0.1 port: v4 only
    assert v6["ip6 nat"]["RECONCILE-SNAT"] == (
        '-s fd00:88:1::/64 ! -o rcbr0 -m comment --comment "reconcile/v1 network demo/front" -j MASQUERADE',
        '-s fd00:88:1::/64 -o rcbr0 -m conntrack --ctstate DNAT -m comment --comment "reconcile/v1 network '
        'demo/front" -j MASQUERADE')
    assert "RECONCILE-INPUT" not in v6["ip6 filter"]  # the loopback guard is IPv4's
    assert v6["ip6 filter"]["RECONCILE-INTERNAL"] == backend.ruleset.tables["filter"]["RECONCILE-INTERNAL"].rules
    assert v6["ip6 filter"]["RECONCILE-FORWARD"] == backend.ruleset.tables["filter"]["RECONCILE-FORWARD"].rules
    assert len(v6["ip6 nat"]["PREROUTING"]) == len(v6["ip6 nat"]["OUTPUT"]) == 1


def _toggled(ipv6_nat: bool) -> dict[str, Any]:
    return {**DUAL, "networks": {**DUAL["networks"], "front": {**FRONT6, "ipv6_nat": ipv6_nat}}}


def test_ipv6_nat_toggles_the_v6_masquerade_alone() -> None:
    backend = FakeBackend()
    converge(desired({"demo": DUAL}), backend)
    masquerade = ('-A RECONCILE-SNAT -s fd00:88:1::/64 ! -o rcbr0 -m comment --comment '
                  '"reconcile/v1 network demo/front" -j MASQUERADE')
    routed = converge(desired({"demo": _toggled(False)}), backend)
    assert heads(routed) == [("update", "firewall", "demo/front")]
    assert routed.changes[0].fields == (FieldChange("ip6 nat", masquerade, None),)
    back = converge(desired({"demo": _toggled(True)}), backend)
    assert back.changes[0].fields == (FieldChange("ip6 nat", None, masquerade),)


def test_a_port_loses_its_v6_dnat_with_the_v6_address_and_flushes_both_families() -> None:
    backend = FakeBackend()
    converge(desired({"demo": DUAL}), backend)
    web = DUAL["containers"]["web"]
    v4_only = {**DUAL, "containers": {"web": {**web, "networks": {**web["networks"], "front": {"ip": "10.88.1.10"}}}}}
    result = converge(desired({"demo": v4_only}), backend)
    (port,) = [c for c in result.changes if c.key == "demo/web/8080/tcp"]
    assert port.fields == (FieldChange("ip6 nat", f"-A RECONCILE-DNAT {render_iptables(DNAT6)}", None),)
    assert isinstance(port.desired, Work) and port.desired.flush == (
        FlowFilter("tcp", 8080, None, Family.IPV4), FlowFilter("tcp", 8080, None, Family.IPV6))
    assert _v6_rules(backend)["ip6 nat"].get("RECONCILE-DNAT") is None


def _listener(address: str, port: int) -> Listener:
    return Listener("tcp", IPv6Address(address), port, 1, 42, "nginx")


@pytest.mark.parametrize(("stack", "listener", "conflict"), [
    (DUAL, _listener("2001:db8::1", 8080), True),  # published over v6: every v6 address
    (DUAL, _listener("::", 8080), True),
    (DUAL, _listener("::1", 8080), False),  # ::1 is left out of the IPv6 DNAT
    ({**DUAL, "networks": {**DUAL["networks"], "front": {"subnet": "10.88.1.0/24", "bridge": "rcbr0"}},
      "containers": {"web": {"networks": {"front": {"ip": "10.88.1.10"}}, "ports": ["8080:80"]}}},
     _listener("2001:db8::1", 8080), False),  # v4 only: a plain v6 listener is not in the way
    (DUAL, _listener("::ffff:127.0.0.1", 5353), False),  # tcp listener, udp port
])
def test_v6_listeners_conflict_with_ports_published_over_v6(stack: dict, listener: Listener, conflict: bool) -> None:
    issues = plan(desired({"demo": stack}), FakeBackend(), listeners=(listener,)).issues
    assert [i.message for i in issues] == (
        ["host port 8080/tcp is in use: nginx (pid 42) listening on "
         f"[{listener.address}]:8080/tcp"] if conflict else [])


def test_a_v6_listener_on_a_port_live_over_v6_is_an_intruder_not_a_conflict() -> None:
    backend = FakeBackend()
    converge(desired({"demo": DUAL}), backend)
    observed_issues = plan(desired({"demo": DUAL}), backend, listeners=(_listener("2001:db8::1", 8080),)).issues
    assert observed_issues == []
    (intruder,) = observed(backend, listeners=(_listener("2001:db8::1", 8080),)).intruders()
    assert intruder.port.key == "demo/web/8080/tcp"


FLOWS6 = ("tcp      6 431999 ESTABLISHED src=2001:db8::2 dst=2001:db8::1 sport=50001 dport=8080 "
          "src=fd00:88:1::10 dst=2001:db8::2 sport=80 dport=50001 [ASSURED] mark=0 use=1\n")


def test_flush_lists_and_deletes_v6_flows_with_their_family() -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        out = (FLOWS6 if argv[-1] == "ipv6" else "") if argv[:2] == ["conntrack", "-L"] else (
            '[{"type": "local", "dst": "2001:db8::1"}]' if argv[0] == "ip" else "")
        return subprocess.CompletedProcess(argv, 0, out, "")

    flush([FlowFilter("tcp", 8080), FlowFilter("tcp", 8080, family=Family.IPV6)], run)
    assert calls == [["conntrack", "-L", "-f", "ipv4"], ["conntrack", "-L", "-f", "ipv6"],
                     ["ip", "-6", "-j", "route", "show", "table", "local", "type", "local"],
                     ["conntrack", "-D", "-f", "ipv6", "-p", "tcp", "--orig-port-dst", "8080",
                      "--orig-dst", "2001:db8::1"]]
