"""A container's own resolver settings: `dns`, `dns_search` and `dns_opt` (Docker's `--dns`,
`--dns-search`, `--dns-option`; Compose's keys of the same names) in place of the host's lines
of its resolv.conf, checked before anything changes, rewritten in place when they change. The
host's files are never touched: the end-to-end test overmounts them inside its sandbox's
private mount namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.container_files import ResolvFile, container_resolv
from specs.model import Container
from tests.sandbox import Sandbox
from tests.specs_support import error_lines
from tests.test_compose_mapping import DEFAULT, service

HOST = ResolvFile("# from the host\nnameserver 10.0.0.2\nsearch corp.example\ndomain corp.example\n"
                  "options edns0\n", None)
FALLBACK = ResolvFile("search corp.example\nnameserver 8.8.8.8\n", "no nameserver of the host's is reachable")


def _container(**settings: object) -> Container:
    return Container.model_validate({"command": ["true"], **settings})


@pytest.mark.parametrize(("settings", "host", "expected"), [
    ({}, HOST, HOST),
    ({"dns": ["10.9.9.9", "fd00::53"]}, HOST,
     ResolvFile("# from the host\nsearch corp.example\ndomain corp.example\noptions edns0\n"
                "nameserver 10.9.9.9\nnameserver fd00::53\n", None)),
    ({"dns_search": ["a.example", "b"]}, HOST,
     ResolvFile("# from the host\nnameserver 10.0.0.2\noptions edns0\nsearch a.example b\n", None)),
    ({"dns_search": ["."]}, HOST, ResolvFile("# from the host\nnameserver 10.0.0.2\noptions edns0\n", None)),
    ({"dns_opt": ["ndots:2", "timeout:1"]}, HOST,
     ResolvFile("# from the host\nnameserver 10.0.0.2\nsearch corp.example\ndomain corp.example\n"
                "options ndots:2 timeout:1\n", None)),
    # The host's fallback and its warning stand unless the container names its own servers.
    ({"dns_opt": ["edns0"]}, FALLBACK, ResolvFile(f"{FALLBACK.text}options edns0\n", FALLBACK.warning)),
    ({"dns": "1.1.1.1"}, FALLBACK, ResolvFile("search corp.example\nnameserver 1.1.1.1\n", None)),
])
def test_the_containers_settings_replace_the_hosts_lines(settings: dict[str, object], host: ResolvFile,
                                                        expected: ResolvFile) -> None:
    assert container_resolv(host, _container(**settings)) == expected


STACK = "name: demo\ncontainers:\n  web:\n    command: sleep 1\n    {}\n"


@pytest.mark.parametrize(("line", "error"), [
    ("dns: [10.0.0.300]", "stack.yaml:5:11: containers.web.dns[0]: expected an IP address (10.0.0.5, fd00::5), "
                          "got '10.0.0.300'"),
    ("dns: fe80::1%eth0", "stack.yaml:5:10: containers.web.dns[0]: expected an IP address, got 'fe80::1%eth0': "
                          "a zone (%eth0) has no meaning here"),
    ("dns_search: [., corp.example]", "stack.yaml:5:18: containers.web.dns_search[0]: '.' means no search domain: "
                                      "it goes alone"),
    ("dns_search: [-corp]", "stack.yaml:5:18: containers.web.dns_search[0]: invalid search domain '-corp': use "
                            "dot-separated labels of 1 to 63 letters, digits, '-' or '_' (no '-' at a label's "
                            "start or end), 253 characters at most"),
    ("dns_opt: ['ndots: 2']", "stack.yaml:5:15: containers.web.dns_opt[0]: invalid resolver option 'ndots: 2': "
                              "one word, like ndots:2 or edns0"),
])
def test_bad_settings_are_errors_at_their_place(tmp_path: Path, line: str, error: str) -> None:
    assert error_lines(tmp_path, {"stack.yaml": STACK.format(line)}) == [error]


def test_compose_keys_map_as_written() -> None:
    assert service("""\
        image: busybox
        dns: 10.9.9.9
        dns_search: [corp.example]
        dns_opt: [ndots:2]
        """) == {"image": "busybox", "dns": "10.9.9.9", "dns_search": ["corp.example"], "dns_opt": ["ndots:2"],
                 **DEFAULT}


RESOLVER_STACK = """\
name: dns
networks:
  front: {{subnet: 10.92.3.0/24}}
containers:
  a:
    command: sleep 1000
    networks: [front]
    dns: {dns}
    dns_search: corp.example
    dns_opt: [ndots:2]
"""


def test_a_container_resolves_with_its_own_settings_rewritten_in_place(sandbox: Sandbox) -> None:
    host = sandbox.write("host.conf", "nameserver 10.0.0.2\nsearch host.example\noptions edns0\n")
    sandbox.run("mount", "--bind", str(host), "/etc/resolv.conf")
    path = sandbox.write("stack.yaml", RESOLVER_STACK.format(dns="[10.9.9.9, 10.9.9.10]"))
    assert sandbox.reconcile("apply", str(path)).returncode == 0
    assert sandbox.exec_in("dns/a", "cat", "/etc/resolv.conf") == \
        "nameserver 10.9.9.9\nnameserver 10.9.9.10\nsearch corp.example\noptions ndots:2\n"
    pid = sandbox.containers()["a"]["pid"]

    path.write_text(RESOLVER_STACK.format(dns="10.9.9.11"))
    result = sandbox.reconcile("diff", str(path))
    assert result.returncode == 2 and \
        "~ container dns/a (in place: its resolver settings or the host's changed)" in result.stdout
    assert sandbox.reconcile("apply", str(path)).returncode == 0
    assert sandbox.exec_in("dns/a", "cat", "/etc/resolv.conf") == \
        "nameserver 10.9.9.11\nsearch corp.example\noptions ndots:2\n"
    assert sandbox.containers()["a"]["pid"] == pid
    assert sandbox.reconcile("down", str(path)).returncode == 0
