"""Sysctls end to end, on the real kernel (inside a sandbox): a container's own namespaces hold
what its spec sets, or Docker's defaults (a user other than root may listen on port 80), in a
user namespace too; the host's values stay as they were; a change recreates the container."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sandbox import Sandbox

STACK = """\
name: sys
containers:
  tuned:
    command: ["sleep", "100000"]
    rootfs: {rootfs}
    sysctls: {{net.core.somaxconn: {somaxconn}, kernel.shmmax: 268435456, net.ipv4.ip_unprivileged_port_start: 2000,
              fs.mqueue.msg_max: 20}}
{extra}  web:
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    rootfs: {rootfs}
    user: "65534"
{extra}"""
SEEN = ("net/core/somaxconn", "kernel/shmmax", "net/ipv4/ip_unprivileged_port_start", "fs/mqueue/msg_max",
        "net/ipv4/ping_group_range")


def _host(name: str) -> str:
    return Path("/proc/sys", name).read_text()


@pytest.mark.parametrize("extra", ["", "    userns: auto\n"], ids=["host-users", "userns-auto"])
def test_sysctls_are_the_containers_own(sandbox: Sandbox, rootfs: Path, extra: str) -> None:
    host = {name: _host(name) for name in SEEN if not name.startswith("net/")}
    path = sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, extra=extra, somaxconn=1024))
    plan = sandbox.apply(path)
    assert "sysctls: {'net.core.somaxconn': '1024', 'kernel.shmmax': '268435456'" in plan, plan
    seen = sandbox.exec_in("tuned", "cat", *(f"/proc/sys/{name}" for name in SEEN)).split("\n")
    groups = "0\t65535" if extra else "0\t2147483647"  # a user namespace's groups: its own 65536
    assert seen[:5] == ["1024", "268435456", "2000", "20", groups], seen
    # Docker's defaults: nobody serves port 80, and the page is there.
    assert sandbox.exec_in("web", "wget", "-qO-", "http://127.0.0.1/") == "hello from web\n"
    assert sandbox.exec_in("web", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start") == "0\n"
    assert {name: _host(name) for name in host} == host  # the IPC ones are the container's own

    assert sandbox.apply(path) == "No changes. The host matches the spec.\n"
    sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, extra=extra, somaxconn=2048))
    changed = sandbox.apply(path)
    assert "-/+ container sys/tuned (recreate: sysctls changed)" in changed and "sys/web" not in changed, changed
    assert sandbox.exec_in("tuned", "cat", "/proc/sys/net/core/somaxconn") == "2048\n"
    assert sandbox.reconcile("down", str(path)).returncode == 0


@pytest.mark.parametrize("extra", ["", "    userns: auto\n"], ids=["host-users", "userns-auto"])
def test_a_value_the_kernel_refuses_fails_the_start_naming_the_sysctl(sandbox: Sandbox, rootfs: Path,
                                                                        extra: str) -> None:
    path = sandbox.write("stack.yaml", f"""\
name: bad
containers:
  c:
    command: ["sleep", "100000"]
    rootfs: {rootfs}
    sysctls: {{net.core.somaxconn: many}}
{extra}""")
    failed = sandbox.reconcile("apply", str(path))
    assert failed.returncode == 1 and "/proc/sys/net/core/somaxconn" in failed.stderr, failed.stderr
    assert "Invalid argument" in failed.stderr, failed.stderr
    assert sandbox.processes() == []
    assert sandbox.reconcile("down", str(path)).returncode == 0
