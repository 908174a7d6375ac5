"""A container's nameservers when the host's resolver is loopback-only (issue 14 item 10).

systemd-resolved leaves `nameserver 127.0.0.53` in /etc/resolv.conf, unreachable from a
container's namespace: containers got no nameserver and no warning. They get the servers
systemd-resolved lists upstream, then Docker's defaults, and the plan says so. The host's files
are never touched: the pure parts read text, the end-to-end test overmounts the files inside its
sandbox's private mount namespace."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from controllers.base import Desired
from controllers.change import Action
from controllers.container import ContainerObservation, ObservedContainer, diff_containers, started_spec
from controllers.container_files import HostResolvers, ResolvFile, hosts_files, resolv_file
from kernel.runtime import ProcessHandle
from specs.loader import load_file
from state.store import ContainerRecord
from tests.sandbox import Sandbox

OWN, UPSTREAM = "/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"
STUB = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n"
"""What systemd-resolved puts in /etc/resolv.conf."""
RESOLVED_UPSTREAM = "nameserver 10.20.0.53\nsearch corp.example\n"
LOOPBACK_ONLY = f"{OWN} has only loopback nameservers (127.0.0.53), unreachable from a container"


def _resolv(own: str, upstream: str = "") -> ResolvFile:
    return resolv_file(HostResolvers(OWN, own, UPSTREAM, upstream))


@pytest.mark.parametrize(("own", "upstream", "expected"), [
    ("nameserver 10.0.0.2\n", RESOLVED_UPSTREAM, ResolvFile("nameserver 10.0.0.2\n", None)),
    ("nameserver 127.0.0.1\nnameserver ::1\nnameserver 10.0.0.2\nsearch x\n", "",
     ResolvFile("nameserver 10.0.0.2\nsearch x\n", None)),
    (STUB, RESOLVED_UPSTREAM, ResolvFile(RESOLVED_UPSTREAM, f"{LOOPBACK_ONLY}: containers use those of {UPSTREAM}")),
    (STUB, "nameserver 127.0.0.1\n",
     ResolvFile("options edns0 trust-ad\nsearch corp.example\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n",
                f"{LOOPBACK_ONLY}, and {UPSTREAM} names none: containers use 8.8.8.8, 8.8.4.4")),
    ("", "", ResolvFile("nameserver 8.8.8.8\nnameserver 8.8.4.4\n",
                        f"{OWN} names no nameserver, and {UPSTREAM} names none: containers use 8.8.8.8, 8.8.4.4")),
])
def test_resolv_file(own: str, upstream: str, expected: ResolvFile) -> None:
    assert _resolv(own, upstream) == expected


STACK = """\
name: dns
networks:
  front: {subnet: 10.92.1.0/24}
containers:
  a:
    command: sleep 1000
    networks: [front]
"""
ADDRESSES = {("dns", "a", "front"): IPv4Address("10.92.1.2")}


def _diff(tmp_path: Path, own: str, running_with: str | None) -> tuple[Action, str]:
    """The plan's one change for container a, with the host files given; running_with: the
    resolv.conf of a running a (None: not running)."""
    path = tmp_path / "stack.yaml"
    path.write_text(STACK)
    stack = load_file(path).stack
    found = {} if running_with is None else {"dns/a": ObservedContainer(
        "dns", "a", ProcessHandle(1, 1),
        ContainerRecord.of("dns", "a", 1, 1, started_spec(stack, "a", ADDRESSES), 0, 0.0), True,
        hosts_files(stack, ADDRESSES, {})["a"], running_with, None, True)}
    observed = ContainerObservation(found, HostResolvers(OWN, own, UPSTREAM, ""), frozenset())
    [change] = diff_containers(Desired({"dns": stack}, frozenset({"dns"}), ADDRESSES), observed).changes
    return change.action, change.reason


def test_the_plan_warns_where_it_writes_a_fallback(tmp_path: Path) -> None:
    warning = f"WARNING: {LOOPBACK_ONLY}, and {UPSTREAM} names none: containers use 8.8.8.8, 8.8.4.4"
    assert _diff(tmp_path, STUB, None) == (Action.CREATE, f"not running; {warning}")
    # A running container started with the host's stub gets its file rewritten in place.
    assert _diff(tmp_path, STUB, "options edns0 trust-ad\nsearch corp.example\n") == (
        Action.UPDATE, f"the host's nameservers changed; {warning}")
    assert _diff(tmp_path, "nameserver 10.0.0.2\n", None) == (Action.CREATE, "not running")


def test_container_gets_the_upstream_servers_then_the_defaults(sandbox: Sandbox) -> None:
    """The host as systemd-resolved leaves it, inside the sandbox's own mount namespace."""
    stub = sandbox.write("stub.conf", STUB)
    sandbox.run("mount", "--bind", str(stub), OWN)
    # A tmpfs over all of /run, in the sandbox's mount namespace only: /run/systemd is missing on a
    # host without systemd (the VM lane's guest), and a directory made on the host would stay.
    sandbox.sh(f"mount -t tmpfs rc-test-run /run && mkdir -p /run/systemd/resolve "
               f"&& printf '{RESOLVED_UPSTREAM}' > {UPSTREAM}")
    path = str(sandbox.write("stack.yaml", STACK))

    result = sandbox.reconcile("apply", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"+ container dns/a (not running; WARNING: {LOOPBACK_ONLY}: containers use those of {UPSTREAM})" \
        in result.stdout
    assert sandbox.reconcile("exec", "dns/a", "--", "cat", OWN).stdout == RESOLVED_UPSTREAM

    sandbox.run("rm", UPSTREAM)  # systemd-resolved stopped: Docker's defaults, rewritten in place
    result = sandbox.reconcile("diff", path)
    assert result.returncode == 2 and "~ container dns/a (in place: the host's nameservers changed; WARNING: " \
        f"{LOOPBACK_ONLY}, and {UPSTREAM} names none: containers use 8.8.8.8, 8.8.4.4)" in result.stdout
    pid = sandbox.containers()["a"]["pid"]
    assert sandbox.reconcile("apply", path).returncode == 0
    assert sandbox.reconcile("exec", "dns/a", "--", "cat", OWN).stdout == \
        "options edns0 trust-ad\nsearch corp.example\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert sandbox.containers()["a"]["pid"] == pid
