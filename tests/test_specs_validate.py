"""Checks across files, against the live host (as data), and the mapping of issues to places."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from specs.errors import Issue, SpecError
from specs.loader import StackFile, locate_issues
from specs.model import Stack
from specs.validate import AppliedNet, HostNet, check_host, check_stacks
from tests.specs_support import error_lines, load_text, stack


@pytest.mark.parametrize(("files", "expected"), [
    pytest.param(
        {"a.yaml": "name: demo\n", "b.yaml": "# again\nname: demo\n"},
        ["b.yaml:2:7: name: stack name 'demo' is already used by a.yaml"],
        id="stack-name-twice"),
    pytest.param(
        {"a.yaml": "name: a\nnetworks: {front: {subnet: 10.88.0.0/16}}\n",
         "b.yml": "name: b\nnetworks:\n  back: {subnet: 10.88.7.0/24}\n"},
        ["b.yml:3:18: networks.back.subnet: subnet 10.88.7.0/24 overlaps networks.front of stack 'a' "
         "(10.88.0.0/16)"],
        id="subnet-overlap-across-files"),
    pytest.param(
        {"a.yaml": "name: a-b\nnetworks: {c: {subnet: 10.1.0.0/24}}\n",
         "b.yaml": "name: a\nnetworks: {b-c: {subnet: 10.2.0.0/24}}\n"},
        ["b.yaml:2:17: networks.b-c.bridge: bridge name 'rc-a-b-c' is already used by networks.c of "
         "stack 'a-b': set networks.b-c.bridge to another name"],
        id="derived-bridge-names-collide"),
    pytest.param(
        {"a.yaml": "name: a\nnetworks: {n: {subnet: 10.1.0.0/24}}\n"
                   "containers: {web: {command: x, networks: [n], ports: ['53:53/udp']}}\n",
         "b.yaml": "name: b\nnetworks: {n: {subnet: 10.2.0.0/24}}\n"
                   "containers:\n  dns:\n    command: x\n    networks: [n]\n"
                   "    ports: ['53:53/tcp', '127.0.0.1:53:5353/udp']\n"},
        ["b.yaml:7:26: containers.dns.ports[1]: host port 127.0.0.1:53/udp conflicts with 0.0.0.0:53/udp "
         "of containers.web.ports[0] of stack 'a'"],
        id="host-port-across-files"),
])
def test_cross_file_checks(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert error_lines(tmp_path, files) == expected


def test_a_repeated_stack_name_skips_cross_checks_for_that_file(tmp_path: Path) -> None:
    """The later file is not the stack its name says: comparing it would report noise."""
    files = {"a.yaml": "name: a\nnetworks: {n: {subnet: 10.1.0.0/24}}\n",
             "b.yaml": "name: a\nnetworks: {n: {subnet: 10.1.0.0/24}}\n"}
    assert error_lines(tmp_path, files) == ["b.yaml:1:7: name: stack name 'a' is already used by a.yaml"]


def test_same_port_on_different_addresses_or_protocols_is_fine(tmp_path: Path) -> None:
    load_text(tmp_path, """\
        name: demo
        networks: {n: {subnet: 10.1.0.0/24}}
        containers:
          a: {command: x, networks: [n], ports: ['127.0.0.1:80:80', '10.0.0.1:80:80', '80:80/udp']}
        """)


def test_every_cycle_is_named_once(tmp_path: Path) -> None:
    text = """\
        name: demo
        containers:
          a: {command: x, depends_on: [b]}
          b: {command: x, depends_on: [c, a]}
          c: {command: x, depends_on: [a]}
          d: {command: x, depends_on: [e]}
          e: {command: x, depends_on: [d]}
        """
    assert error_lines(tmp_path, {"stack.yaml": text}, "stack.yaml") == [
        "stack.yaml:4:35: containers.b.depends_on[1]: dependency cycle: a -> b -> a",
        "stack.yaml:5:32: containers.c.depends_on[0]: dependency cycle: a -> b -> c -> a",
        "stack.yaml:7:32: containers.e.depends_on[0]: dependency cycle: d -> e -> d",
    ]


def test_a_long_dependency_chain_does_not_exhaust_the_stack() -> None:
    count = 5000
    containers = {f"c{i}": {"command": "x", "depends_on": [f"c{i + 1}"] if i + 1 < count else ["c0"]}
                  for i in range(count)}
    [issue] = check_stacks([Stack.model_validate({"name": "demo", "containers": containers})])
    assert issue.loc == ("containers", f"c{count - 1}", "depends_on", 0)


FRONT = stack("demo", front={"subnet": "10.88.1.0/24"})


@pytest.mark.parametrize(("host_nets", "applied", "expected"), [
    pytest.param([HostNet("eth0", IPv4Network("10.88.0.0/16"), "address"),
                  HostNet("eth0", IPv4Network("10.88.0.0/16"), "route"),
                  HostNet("wg0", IPv4Network("10.88.1.128/25"), "route")], [],
                 [Issue("demo", ("networks", "front", "subnet"),
                        "subnet 10.88.1.0/24 overlaps 10.88.0.0/16 on interface eth0 (address)"),
                  Issue("demo", ("networks", "front", "subnet"),
                        "subnet 10.88.1.0/24 overlaps 10.88.1.128/25 on interface wg0 (route)")],
                 id="foreign-address-and-route"),
    pytest.param([HostNet("eth0", IPv4Network("0.0.0.0/0"), "route"),
                  HostNet("eth0", IPv4Network("192.168.1.0/24"), "address")], [], [],
                 id="default-route-and-elsewhere-ignored"),
    pytest.param([], [AppliedNet("other", "lan", IPv4Network("10.88.0.0/20"), "rc-other-lan")],
                 [Issue("demo", ("networks", "front", "subnet"),
                        "subnet 10.88.1.0/24 overlaps 10.88.0.0/20 of network 'lan' of stack 'other', "
                        "applied on this host")],
                 id="applied-other-stack-subnet"),
    pytest.param([], [AppliedNet("other", "lan", IPv4Network("10.99.0.0/24"), "rc-demo-front")],
                 [Issue("demo", ("networks", "front", "bridge"),
                        "bridge name 'rc-demo-front' is used by network 'lan' of stack 'other', applied on "
                        "this host: set networks.front.bridge to another name")],
                 id="applied-other-stack-bridge"),
    pytest.param([], [AppliedNet("demo", "old", IPv4Network("10.88.1.0/24"), "rc-demo-front")], [],
                 id="own-applied-networks-are-ours-to-change"),
])
def test_check_host(host_nets: list[HostNet], applied: list[AppliedNet], expected: list[Issue]) -> None:
    assert check_host([FRONT], host_nets, applied) == expected


def test_locate_issues(tmp_path: Path) -> None:
    [stack_file] = load_text(tmp_path, """\
        name: demo
        networks:
          front:
            subnet: 10.88.1.0/24
        """)
    issues = [Issue("demo", ("networks", "front", "subnet"), "taken"),
              Issue("demo", ("networks", "front", "bridge"), "missing key: the mapping"),
              Issue("gone", ("networks", "x"), "a stack with no file")]
    assert [str(error) for error in locate_issues([stack_file], issues)] == [
        "stack.yaml:4:13: networks.front.subnet: taken",
        "stack.yaml:3:3: networks.front.bridge: missing key: the mapping",
        "stack gone: networks.x: a stack with no file",
    ]


def test_stack_file_without_positions_points_at_the_start() -> None:
    """Other layers may build a StackFile from a stack alone (no file was parsed)."""
    stack_file = StackFile(Path("x.yaml"), FRONT)
    assert stack_file.error(("networks", "front"), "m") == SpecError("x.yaml", 1, 1, ("networks", "front"), "m")
