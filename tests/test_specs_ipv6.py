"""Dual-stack networks in the stack file: the IPv6 fields' exact errors, each at its place, the
checks across fields, containers, stacks and the host (as data), and the round trip."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from specs.errors import Issue
from specs.model import Attachment, Stack
from specs.validate import AppliedNet, HostNet, check_host, check_stacks
from tests.specs_support import error_lines, load_text, stack

BAD: list[tuple[str, str, str]] = [
    ("subnet6-ipv4", """\
        name: demo
        networks:
          front: {subnet6: 10.88.1.0/24}
        """,
     "stack.yaml:3:20: networks.front.subnet6: expected an IPv6 subnet like fd00:88:1::/64, got '10.88.1.0/24': "
     "IPv4 goes in subnet, gateway and ip"),
    ("subnet6-host-bits", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::5/64"}
        """,
     "stack.yaml:3:20: networks.front.subnet6: subnet fd00:88:1::5/64 has host bits set: did you mean "
     "fd00:88:1::/64?"),
    ("subnet6-too-small", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/127"}
        """,
     "stack.yaml:3:20: networks.front.subnet6: subnet fd00:88:1::/127 is too small: use a prefix of /126 or "
     "shorter (room for a gateway and a container)"),
    ("subnet6-link-local", """\
        name: demo
        networks:
          front: {subnet6: "fe80::/64"}
        """,
     "stack.yaml:3:20: networks.front.subnet6: subnet fe80::/64 is not unique local (fc00::/7) or global unicast "
     "(2000::/3): use a ULA prefix such as fd00:88:1::/64, or one of your global prefix"),
    ("gateway6-without-subnet6", """\
        name: demo
        networks:
          front: {gateway6: "fd00:88:1::1"}
        """,
     "stack.yaml:3:21: networks.front.gateway6: gateway6 needs an IPv6 subnet: set subnet6 too"),
    ("ipv6-nat-without-subnet6", """\
        name: demo
        networks:
          front: {ipv6_nat: true}
        """,
     "stack.yaml:3:21: networks.front.ipv6_nat: ipv6_nat needs an IPv6 subnet: set subnet6 too"),
    ("gateway6-outside", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64", gateway6: "fd00:88:2::1"}
        """,
     "stack.yaml:3:48: networks.front.gateway6: gateway6 fd00:88:2::1 is outside subnet fd00:88:1::/64"),
    ("gateway6-network-address", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64", gateway6: "fd00:88:1::"}
        """,
     "stack.yaml:3:48: networks.front.gateway6: gateway6 fd00:88:1:: is the network address of fd00:88:1::/64"),
    ("ipv6-nat-internal", """\
        name: demo
        networks:
          back: {subnet6: "fd00:88:2::/64", internal: true, ipv6_nat: true}
        """,
     "stack.yaml:3:63: networks.back.ipv6_nat: ipv6_nat: true on an internal network: nothing leaves an "
     "internal network; remove ipv6_nat"),
    ("subnet6-overlap", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88::/32"}
          back: {subnet6: "fd00:88:2::/64"}
        """,
     "stack.yaml:4:19: networks.back.subnet6: subnet6 fd00:88:2::/64 overlaps networks.front (fd00:88::/32)"),
    ("subnet6-room", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/126"}
        containers:
          a: {command: x, networks: [front]}
          b: {command: x, networks: [front]}
          c: {command: x, networks: [front]}
        """,
     "stack.yaml:3:20: networks.front.subnet6: subnet6 fd00:88:1::/126 has room for 2 container addresses, but 3 "
     "containers attach to network 'front'"),
    ("ip6-ipv4", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64"}
        containers:
          web: {command: x, networks: {front: {ip6: 10.88.1.10}}}
        """,
     "stack.yaml:5:45: containers.web.networks.front.ip6: expected an IPv6 address like fd00:88:1::10, got "
     "'10.88.1.10': IPv4 goes in subnet, gateway and ip"),
    ("ip6-zone", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64"}
        containers:
          web: {command: x, networks: {front: {ip6: "fd00:88:1::10%eth0"}}}
        """,
     "stack.yaml:5:45: containers.web.networks.front.ip6: expected an IPv6 address like fd00:88:1::10, got "
     "'fd00:88:1::10%eth0': a zone (%eth0) has no meaning here"),
    ("subnet6-zone", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::%eth0/64"}
        """,
     "stack.yaml:3:20: networks.front.subnet6: expected an IPv6 subnet like fd00:88:1::/64, got "
     "'fd00:88:1::%eth0/64': a zone (%eth0) has no meaning here"),
    ("ip-ipv6", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64"}
        containers:
          web: {command: x, networks: {front: {ip: "fd00:88:1::10"}}}
        """,
     "stack.yaml:5:44: containers.web.networks.front.ip: expected an IPv4 address like 10.88.1.10, got "
     "'fd00:88:1::10': IPv6 goes in the field of its own (subnet6, gateway6, ip6)"),
    ("ip6-without-subnet6", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web: {command: x, networks: {front: {ip6: "fd00:88:1::10"}}}
        """,
     "stack.yaml:5:45: containers.web.networks.front.ip6: a static IPv6 address needs a dual-stack network: set "
     "networks.front.subnet6"),
    ("ip6-outside", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64"}
        containers:
          web: {command: x, networks: {front: {ip6: "fd00:88:2::10"}}}
        """,
     "stack.yaml:5:45: containers.web.networks.front.ip6: address fd00:88:2::10 is outside subnet fd00:88:1::/64"),
    ("ip6-network-address", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64"}
        containers:
          web: {command: x, networks: {front: {ip6: "fd00:88:1::"}}}
        """,
     "stack.yaml:5:45: containers.web.networks.front.ip6: address fd00:88:1:: is the network address of "
     "fd00:88:1::/64"),
    ("ip6-gateway6", """\
        name: demo
        networks:
          front: {subnet6: "fd00:88:1::/64", gateway6: "fd00:88:1::fe"}
        containers:
          web: {command: x, networks: {front: {ip6: "fd00:88:1::fe"}}}
        """,
     "stack.yaml:5:45: containers.web.networks.front.ip6: address fd00:88:1::fe is the gateway of network 'front'"),
    ("ip6-twice", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24, subnet6: "fd00:88:1::/64"}
        containers:
          web: {command: x, networks: {front: {ip: 10.88.1.10, ip6: "fd00:88:1::10"}}}
          db: {command: x, networks: {front: {ip: 10.88.1.11, ip6: "fd00:88:1::10"}}}
        """,
     "stack.yaml:6:60: containers.db.networks.front.ip6: address fd00:88:1::10 on network 'front' is already taken "
     "by container 'web'"),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(text, expected, id=case_id)
                                                for case_id, text, expected in BAD])
def test_bad_ipv6_input_gives_exactly_this_error(tmp_path: Path, text: str, expected: str) -> None:
    assert error_lines(tmp_path, {"stack.yaml": text}, "stack.yaml") == [expected]


def test_subnet6_overlap_across_files(tmp_path: Path) -> None:
    files = {"a.yaml": 'name: a\nnetworks: {front: {subnet6: "fd00:88::/32"}}\n',
             "b.yaml": 'name: b\nnetworks:\n  back: {subnet6: "fd00:88:7::/64"}\n'}
    assert error_lines(tmp_path, files) == [
        "b.yaml:3:19: networks.back.subnet6: subnet6 fd00:88:7::/64 overlaps networks.front of stack 'a' "
        "(fd00:88::/32)"]


def test_what_is_fine_on_a_dual_stack_network(tmp_path: Path) -> None:
    """Two containers' ip6 on two networks, a subnet6 beside a pool subnet (IPv4), a routed
    global prefix, and an internal dual-stack network."""
    load_text(tmp_path, """\
        name: demo
        networks:
          front: {subnet6: "2001:db8:1::/64"}
          back: {subnet: 10.88.2.0/24, subnet6: "fd00:88:2::/64", internal: true}
        containers:
          web: {command: x, networks: {front: {ip6: "2001:db8:1::10"}, back: {ip6: "fd00:88:2::10"}}}
          db: {command: x, networks: {back: {ip6: "fd00:88:2::11"}, front: {ip6: "2001:db8:1::11"}}}
        """)


DUAL = stack("demo", front={"subnet": "10.88.1.0/24", "subnet6": "fd00:88:1::/64"})


@pytest.mark.parametrize(("host_nets", "applied", "expected"), [
    pytest.param([HostNet("eth0", IPv6Network("fd00:88::/32"), "address"),
                  HostNet("eth0", IPv6Network("fd00:88::/32"), "route"),
                  HostNet("wg0", IPv6Network("fd00:88:1:0:8000::/65"), "route")], [],
                 [Issue("demo", ("networks", "front", "subnet6"),
                        "subnet6 fd00:88:1::/64 overlaps fd00:88::/32 on interface eth0 (address)"),
                  Issue("demo", ("networks", "front", "subnet6"),
                        "subnet6 fd00:88:1::/64 overlaps fd00:88:1:0:8000::/65 on interface wg0 (route)")],
                 id="foreign-ipv6-address-and-route"),
    pytest.param([HostNet("eth0", IPv6Network("::/0"), "route"),
                  HostNet("eth0", IPv6Network("fe80::/64"), "route"),
                  HostNet("eth0", IPv4Network("0.0.0.0/0"), "route")], [], [],
                 id="default-routes-and-link-local-ignored"),
    pytest.param([], [AppliedNet("other", "lan", IPv4Network("10.99.0.0/24"), "rc-other-lan",
                                 IPv6Network("fd00:88:1::/56"))],
                 [Issue("demo", ("networks", "front", "subnet6"),
                        "subnet6 fd00:88:1::/64 overlaps fd00:88:1::/56 of network 'lan' of stack 'other', "
                        "applied on this host")],
                 id="applied-other-stack-subnet6"),
    pytest.param([], [AppliedNet("demo", "old", IPv4Network("10.99.0.0/24"), "rc-demo-old",
                                 IPv6Network("fd00:88:1::/64"))], [],
                 id="own-applied-networks-are-ours-to-change"),
])
def test_check_host_ipv6(host_nets: list[HostNet], applied: list[AppliedNet], expected: list[Issue]) -> None:
    assert check_host([DUAL], host_nets, applied) == expected


def test_an_ipv4_only_network_ignores_ipv6_host_state() -> None:
    front = stack("demo", front={"subnet": "10.88.1.0/24"})
    assert check_host([front], [HostNet("eth0", IPv6Network("fd00:88::/32"), "address")],
                      [AppliedNet("other", "lan", IPv4Network("10.99.0.0/24"), "rc-other-lan",
                                  IPv6Network("fd00:88::/32"))]) == []


def test_dual_stack_defaults_and_round_trip(tmp_path: Path) -> None:
    [stack_file] = load_text(tmp_path, """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24, subnet6: "fd00:88:1::/64", ipv6_nat: true}
          back: {subnet6: "2001:db8:2::/64", gateway6: "2001:db8:2::fe", internal: true}
        containers:
          web:
            command: x
            networks: {front: {ip6: "fd00:88:1::10"}, back: {ip: null, ip6: "2001:db8:2::10"}}
        """)
    dual = stack_file.stack
    front, back = dual.networks["front"], dual.networks["back"]
    assert (front.gateway6, front.ipv6_nat) == (IPv6Address("fd00:88:1::1"), True)
    assert (back.subnet, back.gateway6, back.ipv6_nat) == (None, IPv6Address("2001:db8:2::fe"), False)
    assert dual.containers["web"].networks == {"front": Attachment(ip6=IPv6Address("fd00:88:1::10")),
                                               "back": Attachment(ip6=IPv6Address("2001:db8:2::10"))}
    dumped = dual.model_dump(mode="json")
    assert dumped["networks"]["front"]["subnet6"] == "fd00:88:1::/64"
    assert Stack.model_validate(dumped) == dual
    assert check_stacks([dual]) == []


def test_schema_describes_the_ipv6_fields() -> None:
    network = Stack.model_json_schema()["$defs"]["Network"]["properties"]
    assert "default" not in network["gateway6"] and "subnet6" in network["gateway6"]["description"]
    assert network["ipv6_nat"]["default"] is False
    assert "fd00:88:1::/64" in network["subnet6"]["description"]
