"""`extra_hosts` and a network's `aliases`, native and from Compose (pure): the forms each
accepts, the native entries they become, and the errors, each at its field."""

from __future__ import annotations

import json
import textwrap
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from specs.compose_map import to_native
from specs.compose_service import ComposeContext
from specs.document import parse_fully
from specs.model import Stack
from tests.specs_support import error_lines, load_text

NATIVE = """\
name: shop
containers:
  web:
    command: x
    networks:
      public: {{aliases: [www, www.example.test]}}
      private: {{}}
{extra}
  db:
    command: x
    hostname: postgres
    networks: [private]
networks:
  public: {{subnet: 10.60.1.0/24}}
  private: {{subnet: 10.60.2.0/24, internal: true}}
"""

def _native(extra: str) -> str:
    return NATIVE.format(extra=textwrap.indent(extra, "    "))


def test_native_forms_become_host_and_address() -> None:
    stack = Stack.model_validate({"name": "t", "containers": {"web": {"command": "x", "extra_hosts": [
        "a:10.0.0.1", "b=10.0.0.2", "c:::1", "d=fd00::5", "e:[fd00::6]", "f=[fd00::7]",
        "host.docker.internal:host-gateway", {"host": "g", "ip": "10.0.0.3"}, {"host": "h", "ip": "[::2]"}]}}})
    assert [(e.host, e.ip) for e in stack.containers["web"].extra_hosts] == [
        ("a", IPv4Address("10.0.0.1")), ("b", IPv4Address("10.0.0.2")), ("c", IPv6Address("::1")),
        ("d", IPv6Address("fd00::5")), ("e", IPv6Address("fd00::6")), ("f", IPv6Address("fd00::7")),
        ("host.docker.internal", "host-gateway"), ("g", IPv4Address("10.0.0.3")), ("h", IPv6Address("::2"))]


def test_a_native_stack_with_both_loads_and_round_trips(tmp_path: Path) -> None:
    extra = 'extra_hosts: ["mirror.test:10.0.0.5", "host.docker.internal:host-gateway"]'
    [loaded] = load_text(tmp_path, _native(extra))
    web = loaded.stack.containers["web"]
    assert web.networks["public"].aliases == ("www", "www.example.test") and web.networks["private"].aliases == ()
    assert Stack.model_validate(json.loads(loaded.stack.model_dump_json())).same_as(loaded.stack)


@pytest.mark.parametrize(("extra", "expected"), [
    ('extra_hosts: ["no-address"]',
     "stack.yaml:8:19: containers.web.extra_hosts[0]: expected 'NAME:ADDRESS' or 'NAME=ADDRESS', got "
     "'no-address': no address"),
    ('extra_hosts: ["bad name:10.0.0.1"]',
     "stack.yaml:8:19: containers.web.extra_hosts[0].host: invalid host name 'bad name': use dot-separated "
     "labels of 1 to 63 letters, digits, '-' or '_' (no '-' at a label's start or end), 253 characters at most"),
    ('extra_hosts: ["-x:10.0.0.1"]',
     "stack.yaml:8:19: containers.web.extra_hosts[0].host: invalid host name '-x': use dot-separated labels of "
     "1 to 63 letters, digits, '-' or '_' (no '-' at a label's start or end), 253 characters at most"),
    ('extra_hosts: ["db:10.0.0.300"]',
     "stack.yaml:8:19: containers.web.extra_hosts[0].ip: expected an IP address (10.0.0.5, fd00::5) or "
     "host-gateway, got '10.0.0.300'"),
    ('extra_hosts: ["db:fe80::1%eth0"]',
     "stack.yaml:8:19: containers.web.extra_hosts[0].ip: expected an IP address, got 'fe80::1%eth0': a zone "
     "(%eth0) has no meaning here"),
    ("extra_hosts: [{host: db, ip: 5}]",
     "stack.yaml:8:34: containers.web.extra_hosts[0].ip: expected an IP address or host-gateway, got an "
     "integer (5): quote it (\"5\")"),
    ("extra_hosts: [7]",
     "stack.yaml:8:19: containers.web.extra_hosts[0]: expected 'NAME:ADDRESS' or 'NAME=ADDRESS' or a mapping "
     "{host, ip}, got an integer (7)"),
])
def test_native_extra_hosts_errors_are_located(tmp_path: Path, extra: str, expected: str) -> None:
    assert error_lines(tmp_path, {"stack.yaml": _native(extra)}) == [expected]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(NATIVE.format(extra="").replace("[www, www.example.test]", "[www, db]"),
                 ["stack.yaml:6:31: containers.web.networks.public.aliases[1]: alias 'db' on network 'public' "
                  "already names container 'db': a name resolves to one container"], id="a-key-elsewhere"),
    pytest.param(NATIVE.format(extra="").replace("      private: {}\n", "      private: {aliases: [postgres]}\n"),
                 ["stack.yaml:7:27: containers.web.networks.private.aliases[0]: alias 'postgres' on network 'private' "
                  "already names container 'db': a name resolves to one container"], id="a-hostname"),
    pytest.param(NATIVE.format(extra="").replace("      private: {}\n", "      private: {aliases: [DB]}\n"),
                 ["stack.yaml:7:27: containers.web.networks.private.aliases[0]: alias 'DB' on network 'private' "
                  "already names container 'db': a name resolves to one container"], id="a-key-any-case"),
    pytest.param(NATIVE.format(extra="")
                 .replace("    networks: [private]\n", "    networks: {private: {aliases: [x]}}\n")
                 .replace("      private: {}\n", "      private: {aliases: [x]}\n"),
                 ["stack.yaml:12:36: containers.db.networks.private.aliases[0]: alias 'x' on network 'private' already "
                  "names container 'web': a name resolves to one container"], id="another-alias"),
    pytest.param(NATIVE.format(extra="").replace("[www, www.example.test]", "[www, www]"),
                 ["stack.yaml:6:31: containers.web.networks.public.aliases[1]: 'www' is listed twice"], id="twice"),
    pytest.param(NATIVE.format(extra="").replace("[www, www.example.test]", "[www, 'a b']"),
                 ["stack.yaml:6:31: containers.web.networks.public.aliases[1]: invalid host name 'a b': use "
                  "dot-separated labels of 1 to 63 letters, digits, '-' or '_' (no '-' at a label's start or end), "
                  "253 characters at most"], id="no-host-name"),
    pytest.param(NATIVE.format(extra="").replace("    networks: [private]\n",
                                                 "    networks: [private]\n    extra_hosts: ['gw:host-gateway']\n"),
                 ["stack.yaml:13:19: containers.db.extra_hosts[0].ip: host-gateway is the gateway of the container's "
                  "default route, and it has none (default_route is null, or all its networks are internal): give "
                  "the host's address"], id="host-gateway-on-internal-only"),
])
def test_alias_and_host_gateway_errors_are_located(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert error_lines(tmp_path, {"stack.yaml": text}) == expected


def test_an_alias_may_repeat_its_own_names_and_anothers_alias_on_another_network(tmp_path: Path) -> None:
    load_text(tmp_path, NATIVE.format(extra="").replace("[www, www.example.test]", "[web, www, cache]")
              .replace("    networks: [private]\n", "    networks: {private: {aliases: [cache, postgres]}}\n"))


COMPOSE_CONTEXT = ComposeContext("/srv/app", {}, lambda path: "")


def _compose(text: str) -> dict[str, object]:
    document = parse_fully(textwrap.dedent(text), "compose.yaml").data
    assert isinstance(document, dict)
    return to_native(document, COMPOSE_CONTEXT, "app", ()).native


def test_compose_extra_hosts_list_and_map_forms_and_aliases_map() -> None:
    native = _compose("""\
        services:
          web:
            extra_hosts:
              - "host.docker.internal:host-gateway"
              - "a=10.0.0.1,10.0.0.2"
              - "six:::1"
              - "br=[fd00::5]"
              - "v4b:[10.0.0.9]"
            networks:
              default: {aliases: [www, site.test]}
            image: busybox
          db:
            image: busybox
            extra_hosts:
              mirror: 10.1.1.1
              multi: ["10.1.1.2", "[fd00::9]"]
        """)
    containers = native["containers"]
    assert isinstance(containers, dict)
    assert containers["web"]["networks"] == {"default": {"aliases": ["www", "site.test"]}}
    assert containers["web"]["extra_hosts"] == [
        {"host": "host.docker.internal", "ip": "host-gateway"}, {"host": "a", "ip": "10.0.0.1"},
        {"host": "a", "ip": "10.0.0.2"}, {"host": "six", "ip": "::1"}, {"host": "br", "ip": "fd00::5"},
        {"host": "v4b", "ip": "10.0.0.9"}]
    assert containers["db"]["extra_hosts"] == [
        {"host": "mirror", "ip": "10.1.1.1"}, {"host": "multi", "ip": "10.1.1.2"}, {"host": "multi", "ip": "fd00::9"}]
    Stack.model_validate(native)


COMPOSE_BAD = """\
name: app
services:
  web:
    image: busybox
    networks:
      default:
        aliases: [www, "no such"]
    extra_hosts:
      - "noaddr"
      - 5
      - "x:10.0.0.999"
  db:
    image: busybox
    networks:
      default: {aliases: [www]}
    extra_hosts:
      mirror: null
      "a:b": 10.0.0.1
  api:
    image: busybox
    extra_hosts: "db:10.0.0.1"
"""


def test_compose_errors_name_the_compose_field(tmp_path: Path) -> None:
    """The mapping's own errors first (forms), then the native model's (names, addresses), then
    the checks across containers (aliases): each stage once the one before passes."""
    assert error_lines(tmp_path, {"compose.yaml": COMPOSE_BAD}) == [
        "compose.yaml:9:9: services.web.extra_hosts[0]: expected 'NAME:ADDRESS' or 'NAME=ADDRESS', got 'noaddr': "
        "no address",
        "compose.yaml:10:9: services.web.extra_hosts[1]: expected 'NAME:ADDRESS' or 'NAME=ADDRESS', got an "
        "integer (5)",
        "compose.yaml:21:18: services.api.extra_hosts: expected a list of 'NAME:ADDRESS' or 'NAME=ADDRESS', or a "
        "mapping, got a string ('db:10.0.0.1')"]
    forms = COMPOSE_BAD.replace('      - "noaddr"\n      - 5\n', "").replace('"db:10.0.0.1"', '["db:10.0.0.1"]')
    rule = ("use dot-separated labels of 1 to 63 letters, digits, '-' or '_' (no '-' at a label's start or end), "
            "253 characters at most")
    assert error_lines(tmp_path, {"compose.yaml": forms}) == [
        f"compose.yaml:7:24: services.web.networks.default.aliases[1]: invalid host name 'no such': {rule}",
        "compose.yaml:9:9: services.web.extra_hosts[0]: expected an IP address (10.0.0.5, fd00::5) or "
        "host-gateway, got '10.0.0.999'",
        "compose.yaml:15:15: services.db.extra_hosts.mirror: expected an IP address or host-gateway, got null",
        f"compose.yaml:16:14: services.db.extra_hosts.'a:b': invalid host name 'a:b': {rule}"]
    values = (forms.replace(', "no such"', "").replace("10.0.0.999", "10.0.0.9")
              .replace("mirror: null", "mirror: 10.0.0.8").replace('"a:b"', "b"))
    # An alias two services share: docker compose takes it, so the file applies; the second
    # service goes without it, and a warning says so.
    [loaded] = load_text(tmp_path, values, "compose.yaml")
    assert [str(warning) for warning in loaded.warnings] == [
        "compose.yaml:13:27: services.db.networks.default.aliases[0]: alias 'www' on network 'default' "
        "already names service 'web': left out here (in /etc/hosts a name resolves to one container, where docker "
        "compose's DNS answers with each in turn)"]
    assert loaded.stack.containers["db"].networks["default"].aliases == ()
