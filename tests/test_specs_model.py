"""Every accepted form of the stack file normalises to the one shape consumers read, and every
default that depends on the stack name or a key is resolved."""

from __future__ import annotations

import json
import textwrap
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from specs.model import Attachment, Network, PortMapping, Resources, Stack, Tmpfs, Volume
from specs.units import format_cpu_list, parse_bytes, parse_cpu_list
from tests.specs_support import FULL_EXAMPLE, load_text

STACK = """\
name: demo
networks:
  front: {{subnet: 10.88.1.0/24}}
  back: {{subnet: 10.88.2.0/24, internal: true}}
containers:
  web:
{body}
"""


def load_container_field(tmp_path: Path, body: str, field: str) -> object:
    text = STACK.format(body=textwrap.indent(textwrap.dedent(body), "    "))
    [stack_file] = load_text(tmp_path, text)
    return getattr(stack_file.stack.containers["web"], field)


@pytest.mark.parametrize(("body", "field", "expected"), [
    pytest.param("command: sh -c 'echo \"hi there\"'", "command", ["sh", "-c", 'echo "hi there"'],
                 id="command-string-split-like-a-shell"),
    pytest.param("command: [/bin/echo, 'a b']", "command", ["/bin/echo", "a b"], id="command-list-kept"),
    pytest.param("command: x\nnetworks: [back, front]", "networks",
                 {"back": Attachment(ip=None), "front": Attachment(ip=None)}, id="networks-list"),
    pytest.param("command: x\nnetworks:\n  front: {ip: 10.88.1.10}\n  back:\n", "networks",
                 {"front": Attachment(ip=IPv4Address("10.88.1.10")), "back": Attachment(ip=None)},
                 id="networks-map-with-null-entry"),
    pytest.param("command: x\nnetworks: [back, front]", "default_route", "front",
                 id="default-route-first-non-internal"),
    pytest.param("command: x\nnetworks: [back]", "default_route", None, id="default-route-none-when-internal-only"),
    pytest.param("command: x\nnetworks: [front]\ndefault_route: null", "default_route", None,
                 id="default-route-explicit-null"),
    pytest.param("command: x", "hostname", "web", id="hostname-default-key"),
    pytest.param("command: x\nhostname: Web-1", "hostname", "Web-1", id="hostname-explicit"),
    pytest.param("command: x\nnetworks: [front]\nports: ['8080:80', '127.0.0.1:53:53/udp', '0.0.0.0:81:81/tcp']",
                 "ports", [PortMapping(host=8080, container=80),
                           PortMapping(host=53, container=53, protocol="udp", host_ip=IPv4Address("127.0.0.1")),
                           PortMapping(host=81, container=81)],
                 id="port-strings"),
    pytest.param("command: x\nnetworks: [front]\n"
                 "ports: [{host: 8443, container: 443, protocol: udp, host_ip: 10.0.0.1}]",
                 "ports", [PortMapping(host=8443, container=443, protocol="udp", host_ip=IPv4Address("10.0.0.1"))],
                 id="port-map"),
    pytest.param("command: x\nvolumes: ['/srv//data/:/data:ro', '/a:/b', {source: /c, target: /d/./e}]", "volumes",
                 [Volume(source=Path("/srv/data"), target="/data", read_only=True),
                  Volume(source=Path("/a"), target="/b", read_only=False),
                  Volume(source=Path("/c"), target="/d/e", read_only=False)],
                 id="volume-strings-and-map"),
    pytest.param("command: x\ntmpfs: ['/run', '/tmp/:rw,noexec,nosuid,nodev,size=1g,mode=01770,uid=1000,gid=100', "
                 "'/x:ro,exec', {target: /y, size: 64Mi, mode: 0o700}, {target: /z, size: 1024, mode: '0755'}]",
                 "tmpfs", (Tmpfs(target="/run"),
                           Tmpfs(target="/tmp", size=1024**3, mode=0o1770, uid=1000, gid=100),
                           Tmpfs(target="/x", read_only=True, exec=True),
                           Tmpfs(target="/y", size=64 * 1024**2, mode=0o700),
                           Tmpfs(target="/z", size=1024, mode=0o755)),
                 id="tmpfs-docker-strings-and-maps"),
    pytest.param("command: x\nshm_size: 1Gi", "shm_size", 1024**3, id="shm-size"),
    pytest.param("command: x", "shm_size", None, id="shm-size-default"),
    pytest.param("command: x\nresources: {memory: 64Mi, cpus: 1, pids: 100, cpuset: '0,1,2,3,5', cpu_shares: 512}",
                 "resources", Resources(memory=64 * 1024**2, cpus=1.0, pids=100, cpuset="0-3,5", cpu_shares=512),
                 id="resources"),
    pytest.param("command: x\nresources: {memory: 8388608}", "resources", Resources(memory=8388608),
                 id="memory-plain-bytes"),
    pytest.param("command: x\nenv: {A: '1', B_2: ''}", "env", {"A": "1", "B_2": ""}, id="env"),
    pytest.param("command: x\nuser: '1000:100'", "user", "1000:100", id="user-uid-gid"),
    pytest.param("command: x", "workdir", "/", id="workdir-default"),
    pytest.param("command: x\nworkdir: /srv/app/", "workdir", "/srv/app", id="workdir-normalised"),
    pytest.param("command: x", "restart", "always", id="restart-default"),
    pytest.param("command: x\nrestart: 'no'", "restart", "no", id="restart-no"),
    pytest.param("command: x\nrestart: no", "restart", "no", id="restart-no-unquoted-yaml-1.2"),
    pytest.param("command: x", "stop_grace", 10.0, id="stop-grace-default"),
    pytest.param("command: x\nstop_grace: 2", "stop_grace", 2.0, id="stop-grace-int"),
    pytest.param("command: x", "resources", Resources(), id="resources-default"),
    pytest.param("command: x\nrootfs: /srv/rootfs/busybox", "rootfs", Path("/srv/rootfs/busybox"), id="rootfs"),
])
def test_container_forms_normalise(tmp_path: Path, body: str, field: str, expected: object) -> None:
    assert load_container_field(tmp_path, body, field) == expected


def test_container_networks_keep_spec_order(tmp_path: Path) -> None:
    networks = load_container_field(tmp_path, "command: x\nnetworks: {back: {}, front: {}}", "networks")
    assert list(networks) == ["back", "front"]  # type: ignore[call-overload]


def test_network_defaults_resolved(tmp_path: Path) -> None:
    [stack_file] = load_text(tmp_path, """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
          back: {subnet: 10.88.2.0/30, gateway: 10.88.2.2, bridge: br-back, mtu: 9000, internal: true}
        """)
    assert stack_file.stack.networks == {
        "front": Network(subnet=IPv4Network("10.88.1.0/24"), gateway=IPv4Address("10.88.1.1"),
                         bridge="rc-demo-front", mtu=1500, internal=False),
        "back": Network(subnet=IPv4Network("10.88.2.0/30"), gateway=IPv4Address("10.88.2.2"),
                        bridge="br-back", mtu=9000, internal=True),
    }


def test_containers_left_to_the_defaults_share_one_frozen_instance_of_each(tmp_path: Path) -> None:
    """A thousand containers would otherwise hold a thousand equal Logging, LogOptions and
    Resources models each (~1.5 MiB at N=1000, tracemalloc)."""
    [stack_file] = load_text(tmp_path, """\
        name: demo
        containers:
          a: {command: x}
          b: {command: x, logging: {driver: local}}
          c: {command: x}
        """)
    a, b, c = stack_file.stack.containers.values()
    assert a.logging is c.logging and a.resources is c.resources and a.logging.options is b.logging.options
    assert b.logging.driver == "local" and a.logging.driver == "json-file"


def test_full_example_round_trips_through_json(tmp_path: Path) -> None:
    """The state store keeps `model_dump_json()` and validates it back for `status`; it decodes
    to what `model_dump(mode="json")` gives (the records of earlier releases)."""
    [stack_file] = load_text(tmp_path, FULL_EXAMPLE)
    stack = stack_file.stack
    stored = json.loads(stack.model_dump_json())
    assert Stack.model_validate(stored) == stack and stored == stack.model_dump(mode="json")
    assert stack.containers["db"].default_route is None
    assert stack.containers["web"].ports[1].host_ip == IPv4Address("127.0.0.1")


def test_schema_describes_both_forms_and_hides_derived_defaults() -> None:
    schema = Stack.model_json_schema()
    container = schema["$defs"]["Container"]["properties"]
    assert {"type": "string"} in container["ports"]["items"]["anyOf"]
    assert {"$ref": "#/$defs/PortMapping"} in container["ports"]["items"]["anyOf"]
    assert container["command"]["description"].startswith("argv as a list")
    bridge = schema["$defs"]["Network"]["properties"]["bridge"]
    assert "default" not in bridge and "rc-<stack>-<network>" in bridge["description"]
    assert schema["properties"]["networks"]["patternProperties"] == {
        "^[a-z][a-z0-9-]{0,62}$": {"$ref": "#/$defs/Network"}}


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("512", 512), ("1K", 1000), ("1Ki", 1024), ("64Mi", 64 * 1024**2), ("1G", 10**9),
    ("1.5Gi", 3 * 1024**3 // 2), ("2Ti", 2 * 1024**4), ("3T", 3 * 10**12), (" 10 Mi ", 10 * 1024**2),
])
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("64m", "unknown unit 'm' in '64m': use Ki, Mi, Gi, Ti (powers of 1024), K, M, G, T (powers of 1000) "
            "or no unit for bytes"),
    ("Mi", "expected a size like '64Mi', '1G' or a number of bytes, got 'Mi'"),
    ("-1", "expected a size like '64Mi', '1G' or a number of bytes, got '-1'"),
    ("9" * 30, f"expected a size like '64Mi', '1G' or a number of bytes, got '{'9' * 30}'"),
])
def test_parse_bytes_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_bytes(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "cpus", "canonical"), [
    ("0", [0], "0"), ("0-3,5", [0, 1, 2, 3, 5], "0-3,5"), ("5,3,4,0", [0, 3, 4, 5], "0,3-5"),
    ("1-2, 2-3", [1, 2, 3], "1-3"), ("7-7", [7], "7"),
])
def test_cpu_lists(text: str, cpus: list[int], canonical: str) -> None:
    assert parse_cpu_list(text) == cpus
    assert format_cpu_list(cpus) == canonical


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected a CPU list like '0-3,5', got ''"),
    ("0-", "expected a CPU list like '0-3,5', got '0-'"),
    ("a", "expected a CPU list like '0-3,5', got 'a'"),
    ("3-1", "CPU range '3-1' is backwards: write '1-3'"),
    ("8192", "CPU 8192 is out of range: the kernel supports CPUs 0-8191"),
])
def test_cpu_list_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cpu_list(text)
    assert str(caught.value) == message


def test_a_derived_bridge_name_too_long_for_the_kernel_is_shortened_with_a_hash() -> None:
    networks = {"net": {"subnet": "10.9.0.0/24"}, "frontend": {"subnet": "10.9.1.0/24"}}
    stack = Stack.model_validate({"name": "webshop", "networks": networks})
    bridges = {key: network.bridge for key, network in stack.networks.items()}
    assert bridges["net"] == "rc-webshop-net"  # a readable name that fits is kept as it was
    assert bridges["frontend"].startswith("rc-websho-") and len(bridges["frontend"]) == 15
    assert Stack.model_validate({"name": "webshop", "networks": networks}).networks["frontend"].bridge == \
        bridges["frontend"]  # deterministic
    other = Stack.model_validate({"name": "webshop", "networks": {"frontends": {"subnet": "10.9.2.0/24"}}})
    assert other.networks["frontends"].bridge != bridges["frontend"]
