"""A host process that binds a port after we published it (issue 14 item 11).

Our DNAT takes the port's traffic before local delivery, so the intruder gets none: the port is
still ours. Later changes of the stack go through, `status` names the intruder, and only a port
about to be published anew is refused when a host process holds it. Everything runs in the
sandbox: the stack's container, the intruders and the probes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest

from controllers.firewall_conflicts import Intruder
from controllers.firewall_rules import PortKey
from kernel.netfilter_listeners import Listener
from tests.firewall_canaries import CANARY
from tests.firewall_plans import DEMO, converge, desired, edit, observed, plan
from tests.firewall_support import FakeBackend, foreign_rules
from tests.firewall_view import backend_in_use, our_rules
from tests.sandbox import Sandbox
from tests.waiting import eventually

PYTHON = "/usr/bin/python3"

ANSWER = """\
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    conn = s.accept()[0]
    conn.sendall((sys.argv[2] + os.environ.get("GEN", "")).encode())
    conn.close()
"""
"""A server on tcp/PORT answering NAME and the generation of its env: `ANSWER PORT NAME`. The
container runs it on tcp/80 as `web`, host processes (the intruders) on their port."""

PROBE = """\
import socket, sys
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.decode())
except OSError:
    print("failed")
"""


def stack_text(generation: str, ports: list[str]) -> str:
    return ("name: intr\n"
            "networks:\n"
            "  front: {subnet: 10.91.1.0/24}\n"
            "containers:\n"
            "  web:\n"
            f"    command: {json.dumps([PYTHON, '-c', ANSWER, '80', 'web'])}\n"
            "    networks: {front: {ip: 10.91.1.10}}\n"
            f"    env: {{GEN: \"{generation}\"}}\n"
            f"    ports: {json.dumps(ports)}\n")


def probe(sandbox: Sandbox, address: str, port: int) -> str:
    return sandbox.run(PYTHON, "-c", PROBE, address, str(port), timeout=15).stdout.strip()


def listening(sandbox: Sandbox, port: int) -> bool:
    """Someone listens on tcp/PORT in the sandbox (LISTEN is state 0A in /proc/net/tcp)."""
    table = sandbox.run("cat", "/proc/net/tcp").stdout
    return any(f":{port:04X}" == line.split()[1][-5:] and line.split()[3] == "0A"
               for line in table.splitlines()[1:])


def start_intruder(sandbox: Sandbox, port: int) -> int:
    """A host process on 0.0.0.0:PORT in the sandbox's network namespace (the sandbox kills it
    with every other process there), once it listens; its pid."""
    script = f"{PYTHON} -c {shlex.quote(ANSWER)} {port} intruder >/dev/null 2>&1 & echo $!"
    pid = int(sandbox.sh(script).stdout)
    assert eventually(lambda: listening(sandbox, port), True, timeout=10.0)
    return pid


def apply(sandbox: Sandbox, path: str) -> None:
    result = sandbox.reconcile("apply", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_host_process_on_a_published_port_blocks_nothing_and_is_named_by_status(
        sandbox: Sandbox) -> None:
    sandbox.run("iptables-restore", "--noflush", input=CANARY)
    canary = foreign_rules(sandbox)
    backend = backend_in_use(sandbox)
    path = str(sandbox.write("stack.yaml", stack_text("1", ["8121:80"])))
    apply(sandbox, path)
    assert eventually(lambda: probe(sandbox, "127.0.0.1", 8121), "web1", timeout=10.0) == "web1"

    intruder = start_intruder(sandbox, 8121)
    # Our DNAT comes first: the intruder gets nothing, the container everything.
    assert probe(sandbox, "127.0.0.1", 8121) == "web1"
    assert sandbox.reconcile("diff", path).returncode == 0

    # An unrelated change (the container's env) goes through, and the port still leads to it.
    sandbox.write("stack.yaml", stack_text("2", ["8121:80"]))
    apply(sandbox, path)
    assert eventually(lambda: probe(sandbox, "127.0.0.1", 8121), "web2", timeout=10.0) == "web2"

    (stack,) = sandbox.status()["stacks"]
    assert stack["sync"] == "Synced"
    message = (f"host port 8121/tcp of container 'web' is also bound by python3 (pid {intruder}) "
               "listening on 0.0.0.0:8121/tcp; it gets no traffic, the published port takes it")
    assert stack["port_intruders"] == [{"port": "8121/tcp", "container": "web", "address": "0.0.0.0",
                                        "pid": intruder, "command": "python3", "message": message}]
    assert f"  intruder: {message}" in sandbox.reconcile("status").stdout.splitlines()

    # A port not published yet is still refused when a host process holds it: nothing changes.
    rules, pid = our_rules(sandbox, backend), sandbox.containers()["web"]["pid"]
    clash = start_intruder(sandbox, 8122)
    sandbox.write("stack.yaml", stack_text("3", ["8121:80", "8122:80"]))
    result = sandbox.reconcile("apply", path)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", (
        f"{path}:9:24: containers.web.ports[1]: host port 8122/tcp is in use: "
        f"python3 (pid {clash}) listening on 0.0.0.0:8122/tcp\n"))
    assert our_rules(sandbox, backend) == rules and sandbox.containers()["web"]["pid"] == pid
    assert probe(sandbox, "127.0.0.1", 8121) == "web2"
    assert foreign_rules(sandbox) == canary

    assert sandbox.reconcile("down", path).returncode == 0
    assert our_rules(sandbox, backend) == [] and foreign_rules(sandbox) == canary
    # With our DNAT gone, the port is the intruder's again.
    assert probe(sandbox, "127.0.0.1", 8121) == "intruder"


def _listener(address: str, port: int, protocol: str = "tcp") -> Listener:
    ip = IPv6Address(address) if ":" in address else IPv4Address(address)
    return Listener(protocol, ip, port, inode=4242, pid=77, command="nginx")


WEB_8080 = PortKey("demo", "web", None, 8080, "tcp")
WEB_5353 = PortKey("demo", "web", IPv4Address("127.0.0.1"), 5353, "udp")
"""DEMO's two published ports (8080:80 and 127.0.0.1:5353:53/udp)."""


@pytest.mark.parametrize(("listener", "port"), [
    (_listener("0.0.0.0", 8080), WEB_8080),
    (_listener("::", 8080), WEB_8080),
    (_listener("127.0.0.1", 8080), WEB_8080),
    (_listener("::1", 8080), None),  # IPv6 only: it keeps its traffic, no intruder
    (_listener("0.0.0.0", 8080, "udp"), None),
    (_listener("127.0.0.1", 5353, "udp"), WEB_5353),
    (_listener("10.0.0.1", 5353, "udp"), None),  # 5353/udp is narrowed to 127.0.0.1
])
def test_a_listener_on_a_port_we_publish_is_an_intruder_not_an_issue(
        listener: Listener, port: PortKey | None) -> None:
    backend = FakeBackend()
    converge(desired({"demo": DEMO}), backend)
    changed = {**DEMO, "containers": {"web": {**DEMO["containers"]["web"], "env": {"GEN": "2"}}}}
    assert plan(desired({"demo": changed}), backend, listeners=(listener,)).issues == []
    found = observed(backend, listeners=(listener,)).intruders()
    assert found == ([Intruder(port, listener)] if port else [])


def _moved_to_api(_backend: FakeBackend) -> dict:
    return {**DEMO, "containers": {"api": {**DEMO["containers"]["web"], "ports": ["8080:80"]}}}


def _dnat_deleted(backend: FakeBackend) -> dict:
    edit(backend, "nat", "RECONCILE-DNAT", lambda rules: [r for r in rules if "8080" not in r])
    return DEMO


def _new_port(_backend: FakeBackend) -> dict:
    web = DEMO["containers"]["web"]
    return {**DEMO, "containers": {"web": {**web, "ports": [*web["ports"], "9000:90"]}}}


@pytest.mark.parametrize(("change", "loc", "port"), [
    # Another container's port is published anew (the old owner's rule goes).
    (_moved_to_api, ("containers", "api", "ports", 0), "8080/tcp"),
    # Our rule was deleted by hand: the process gets the traffic now, taking it back is a clash.
    (_dnat_deleted, ("containers", "web", "ports", 0), "8080/tcp"),
    (_new_port, ("containers", "web", "ports", 2), "9000/tcp"),
])
def test_a_listener_on_a_port_about_to_be_published_anew_is_still_refused(
        change: Callable[[FakeBackend], dict], loc: tuple[object, ...], port: str) -> None:
    backend = FakeBackend()
    converge(desired({"demo": DEMO}), backend)
    spec = change(backend)
    listener = _listener("0.0.0.0", int(port.split("/")[0]))
    result = plan(desired({"demo": spec}), backend, listeners=(listener,))
    assert [(i.loc, i.message) for i in result.issues] == [
        (loc, f"host port {port} is in use: nginx (pid 77) listening on 0.0.0.0:{port}")]
