"""Aliases and extra_hosts end to end, as a user runs the CLI, on the real kernel (inside a
sandbox): a container reaches a peer by its alias on the network they share (and only there),
and by its own extra_hosts entries, host-gateway among them; a change of either is written into
the running containers' /etc/hosts in place, without a restart."""

from __future__ import annotations

from pathlib import Path

from controllers.container_files import LOCALHOST
from tests.sandbox import Sandbox
from tests.waiting import eventually

STACK = """\
name: names
containers:
  web:
    command: ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
    rootfs: {rootfs}
    networks:
      edge: {{aliases: [{alias}]}}
      core: {{}}
  db:
    command: sleep 1000
    rootfs: {rootfs}
    networks:
      core: {{aliases: [postgres]}}
    extra_hosts: [{extra}]
  client:
    command: sleep 1000
    rootfs: {rootfs}
    networks: [edge]
    extra_hosts: ["host.docker.internal:host-gateway"]
networks:
  edge: {{subnet: 10.78.1.0/24}}
  core: {{subnet: 10.78.2.0/24, internal: true}}
"""

def _fetch(sandbox: Sandbox, container: str, url: str) -> str:
    result = sandbox.reconcile("exec", container, "--", "wget", "-qO-", url)
    return result.stdout if result.returncode == 0 else result.stderr


def test_aliases_and_extra_hosts_resolve_inside_and_follow_changes_in_place(sandbox: Sandbox, rootfs: Path) -> None:
    path = str(sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, alias="site", extra='"static.test:10.78.2.2"')))
    sandbox.apply(path)
    pids = {name: c["pid"] for name, c in sandbox.containers().items()}

    # web by its alias on edge, from client (on edge); db by its alias on core, from web
    assert eventually(lambda: _fetch(sandbox, "client", "http://site/"), "hello from web\n") == "hello from web\n"
    assert "PING postgres (10.78.2.3)" in sandbox.exec_in("web", "ping", "-c1", "-W2", "postgres")
    # db is on core only: web's alias on edge is no name there; its extra entry is
    db_hosts = sandbox.exec_in("db", "cat", "/etc/hosts")
    assert db_hosts == LOCALHOST + "10.78.2.2\tstatic.test\n10.78.2.2\tweb\n10.78.2.3\tdb postgres\n"
    assert _fetch(sandbox, "db", "http://static.test/") == "hello from web\n"
    assert "bad address 'site'" in _fetch(sandbox, "db", "http://site/")
    # host-gateway: the gateway of client's default route, the host's side of edge
    assert sandbox.exec_in("client", "cat", "/etc/hosts") == (
        LOCALHOST + "10.78.1.1\thost.docker.internal\n10.78.1.2\tweb site\n10.78.1.3\tclient\n")
    assert "PING host.docker.internal (10.78.1.1)" in sandbox.exec_in(
        "client", "ping", "-c1", "-W2", "host.docker.internal")

    # A changed alias and a changed extra_hosts: rewritten in place, every process kept.
    sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, alias="portal",
                                             extra='"static.test:10.78.2.2", "mirror.test=10.78.2.2"'))
    plan = sandbox.reconcile("diff", path)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ container names/client (in place: peers changed)" in plan.stdout
    assert "/etc/hosts: 10.78.1.2\tweb site → 10.78.1.2\tweb portal" in plan.stdout
    assert "/etc/hosts: (none) → 10.78.2.2\tmirror.test" in plan.stdout
    assert "recreate" not in plan.stdout
    sandbox.apply(path)
    assert {name: c["pid"] for name, c in sandbox.containers().items()} == pids
    assert _fetch(sandbox, "client", "http://portal/") == "hello from web\n"
    assert "bad address 'site'" in _fetch(sandbox, "client", "http://site/")
    assert _fetch(sandbox, "db", "http://mirror.test/") == "hello from web\n"
    assert sandbox.reconcile("diff", path).returncode == 0
