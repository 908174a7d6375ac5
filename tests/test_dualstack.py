"""Dual-stack networks: IPv6 addresses for bridges and containers beside the IPv4 ones.

Pure tables for /etc/hosts; then end to end on the real kernel (inside a sandbox): addresses,
default routes, traffic, drift repair, addresses kept from the kernel when the store is lost,
`down`; and an IPv4-only stack that the IPv6 code leaves as it was."""

from __future__ import annotations

import json
import sqlite3
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from controllers.container_files import hosts_files
from specs.model import Stack
from state.store import DB_NAME, Store
from tests.sandbox import Sandbox
from tests.waiting import eventually
from tests.watch_agent import Agent, watch_row

HOSTS_STACK = {
    "name": "h",
    "networks": {"dual": {"subnet": "10.1.0.0/24", "subnet6": "fd00:1::/64"},
                 "plain": {"subnet": "10.2.0.0/24"}},
    "containers": {
        "a": {"command": "sleep 1", "networks": ["dual", "plain"]},
        "b": {"command": "sleep 1", "networks": ["dual"], "hostname": "bee"},
        "c": {"command": "sleep 1", "networks": ["plain"]},
    },
}
V4 = {("h", "a", "dual"): IPv4Address("10.1.0.2"), ("h", "a", "plain"): IPv4Address("10.2.0.2"),
      ("h", "b", "dual"): IPv4Address("10.1.0.3"), ("h", "c", "plain"): IPv4Address("10.2.0.3")}
V6 = {("h", "a", "dual"): IPv6Address("fd00:1::2"), ("h", "b", "dual"): IPv6Address("fd00:1::3")}
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@pytest.mark.parametrize(("key", "expected"), [
    # its own and each peer's IPv4 line, then the IPv6 lines of the dual-stack network only
    ("a", "10.1.0.2\ta\n10.1.0.3\tbee b\n10.2.0.3\tc\nfd00:1::2\ta\nfd00:1::3\tbee b\n"),
    ("b", "10.1.0.2\ta\n10.1.0.3\tbee b\nfd00:1::2\ta\nfd00:1::3\tbee b\n"),
    # on no dual-stack network: the file is what it always was
    ("c", "10.2.0.2\ta\n10.2.0.3\tc\n"),
])
def test_hosts_file(key: str, expected: str) -> None:
    stack = Stack.model_validate(HOSTS_STACK)
    assert hosts_files(stack, V4, V6)[key] == LOCALHOST + expected


STACK = """\
name: ds
networks:
  front: {{subnet: 10.66.1.0/24, subnet6: "fd00:66:1::/64"}}
  back: {{subnet: 10.66.2.0/24, internal: true}}
containers:
  a:
    command: sleep 1000
    rootfs: {rootfs}
    networks:
      front: {{{a_front}}}
      back: {{}}
  b:
    command: sleep 1000
    rootfs: {rootfs}
    networks: [front]
"""
A_STATIC = 'ip6: "fd00:66:1::50"'
GATEWAY6 = "fd00:66:1::1"





def _addresses(sandbox: Sandbox, ifname: str, netns: str | None = None, family: str = "inet6") -> list[str]:
    """Global addresses of a link, not tentative (usable at once: no DAD)."""
    link = sandbox.link(ifname, netns)
    assert link is not None, ifname
    return [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
            if a["family"] == family and a.get("scope") == "global" and not a.get("tentative")]


def _default6(sandbox: Sandbox, netns: str) -> str:
    return sandbox.run("ip", "-n", netns, "-6", "route", "show", "default").stdout.strip()


def _rows(sandbox: Sandbox, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{sandbox.state_dir / DB_NAME}?mode=ro", uri=True) as db:
        return db.execute(query).fetchall()


def _pids(sandbox: Sandbox) -> dict[str, int]:
    return {name: c["pid"] for name, c in sandbox.containers().items()}


def test_dual_stack_round_trip(sandbox: Sandbox, rootfs: Path) -> None:
    # A hardened host: every new link starts with IPv6 disabled; our bridge is ours to enable.
    sandbox.sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1")
    path = str(sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, a_front=A_STATIC)))
    out = sandbox.apply(path)
    assert "net.ipv6.conf.all.forwarding (in place: non-internal dual-stack networks route IPv6" in out
    assert sandbox.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "1"

    # The bridge holds gateway6; each container end its IPv6 address, usable at once.
    assert _addresses(sandbox, "rc-ds-front") == [f"{GATEWAY6}/64"]
    assert _addresses(sandbox, "rc-ds-back") == []
    assert _addresses(sandbox, "eth0", "rc-ds_a") == ["fd00:66:1::50/64"]
    assert _addresses(sandbox, "eth0", "rc-ds_b") == ["fd00:66:1::2/64"]
    for netns in ("rc-ds_a", "rc-ds_b"):
        assert _default6(sandbox, netns).startswith(f"default via {GATEWAY6} dev eth0"), netns
    # The IPv4-only network leaves the container no IPv6 at all on its link, not even link-local.
    eth1 = sandbox.link("eth1", "rc-ds_a")
    assert eth1 is not None and [a for a in eth1["addr_info"] if a["family"] == "inet6"] == []

    # Traffic over IPv6: container to container, container to gateway.
    sandbox.exec_in("a", "ping", "-6", "-c1", "-W2", "fd00:66:1::2")
    sandbox.exec_in("b", "ping", "-6", "-c1", "-W2", GATEWAY6)
    sandbox.exec_in("b", "ping", "-6", "-c1", "-W2", "fd00:66:1::50")
    assert sandbox.exec_in("a", "cat", "/etc/hosts") == (
        LOCALHOST + "10.66.1.2\ta\n10.66.1.3\tb\nfd00:66:1::50\ta\nfd00:66:1::2\tb\n")

    status = sandbox.containers()
    assert (status["a"]["ips"], status["a"]["ips6"]) == ({"front": "10.66.1.2", "back": "10.66.2.2"},
                                                         {"front": "fd00:66:1::50"})
    assert status["b"]["ips6"] == {"front": "fd00:66:1::2"}
    text = sandbox.reconcile("status", path).stdout
    assert "front=10.66.1.3,fd00:66:1::2" in text and "10.66.1.0/24 fd00:66:1::/64" in text

    assert sandbox.apply(path) == "No changes. The host matches the spec.\n"
    assert sandbox.reconcile("diff", path).returncode == 0
    pids = _pids(sandbox)

    # Drift of the IPv6 plumbing is repaired in place, like the IPv4 one.
    for drift, expected in [
        ("ip -n rc-ds_b addr del fd00:66:1::2/64 dev eth0",
         "addresses: [10.66.1.3/24] → [10.66.1.3/24, fd00:66:1::2/64]"),
        ("ip -n rc-ds_a -6 route del default", f"default_route6: (none) → via {GATEWAY6} dev eth0"),
        (f"ip addr del {GATEWAY6}/64 dev rc-ds-front", f"addresses: [10.66.1.1/24] → [10.66.1.1/24, {GATEWAY6}/64]"),
        ("ip netns exec rc-ds_b sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1",
         "addresses: [10.66.1.3/24] → [10.66.1.3/24, fd00:66:1::2/64]"),
        ("sysctl -qw net.ipv6.conf.rc-ds-front.disable_ipv6=1",
         f"addresses: [10.66.1.1/24] → [10.66.1.1/24, {GATEWAY6}/64]"),
    ]:
        sandbox.sh(drift)
        result = sandbox.reconcile("diff", path)
        assert result.returncode == 2 and expected in result.stdout, (drift, result.stdout)
        sandbox.apply(path)
        assert sandbox.reconcile("diff", path).returncode == 0, drift
        assert _pids(sandbox) == pids, drift
    assert _default6(sandbox, "rc-ds_b").startswith(f"default via {GATEWAY6} dev eth0")
    sandbox.exec_in("a", "ping", "-6", "-c1", "-W2", "fd00:66:1::2")

    # A lost store: the kernel keeps the addresses, even one no longer static (else a would
    # get the lowest free one, fd00:66:1::2, and b the next).
    (sandbox.state_dir / "state.db").unlink()
    sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, a_front=""))
    sandbox.apply(path)
    assert _addresses(sandbox, "eth0", "rc-ds_a") == ["fd00:66:1::50/64"]
    assert _addresses(sandbox, "eth0", "rc-ds_b") == ["fd00:66:1::2/64"]
    assert sandbox.reconcile("diff", path).returncode == 0
    assert _rows(sandbox, "select container, network, address from leases6 order by container") == [
        ("a", "front", "fd00:66:1::50"), ("b", "front", "fd00:66:1::2")]

    assert sandbox.reconcile("down", path).returncode == 0
    assert sandbox.our_links() == [] and sandbox.netns_names() == []
    assert _rows(sandbox, "select * from leases6") == []


V4_STACK = """\
name: v4
networks:
  net: {{subnet: 10.67.1.0/24}}
containers:
  c:
    command: sleep 1000
    rootfs: {rootfs}
    networks: [net]
"""


def test_ipv4_only_stack_is_left_as_it_was(sandbox: Sandbox, rootfs: Path) -> None:
    """No IPv6 in the plan, on the bridge or in the container, and nothing new to converge."""
    path = str(sandbox.write("stack.yaml", V4_STACK.format(rootfs=rootfs)))
    # The only IPv6 in it: the host end's own is off, as on every network.
    plan = sandbox.reconcile("diff", path).stdout.replace("host_ipv6: False", "")
    assert "ipv6" not in plan and "route6" not in plan and "::" not in plan, plan
    out = sandbox.apply(path).replace("host_ipv6: False", "")
    assert "ipv6" not in out and "route6" not in out, out
    assert _addresses(sandbox, "rc-v4-net") == []
    eth0 = sandbox.link("eth0", "rc-v4_c")
    assert eth0 is not None and [a for a in eth0["addr_info"] if a["family"] == "inet6"] == []
    assert _default6(sandbox, "rc-v4_c") == ""
    assert sandbox.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "0"
    assert json.loads(sandbox.reconcile("status", "-o", "json").stdout)["stacks"][0]["containers"][0]["ips6"] == {}
    assert sandbox.apply(path) == "No changes. The host matches the spec.\n"
    assert sandbox.reconcile("down", path).returncode == 0


WATCHED = """\
name: w6
networks:
  front: {subnet: 10.68.1.0/24, subnet6: "fd00:68:1::/64"}
containers:
  web:
    command: sleep 100000
    networks: [front]
"""


def test_watch_repairs_ipv6_drift_by_event(sandbox: Sandbox) -> None:
    """The agent hears IPv6 address and route changes: with no resync due, a deleted IPv6
    address or default route in a container is back within the event's repair."""
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    (specs / "w6.yaml").write_text(WATCHED)
    agent = Agent(sandbox, specs, "--resync", "600", "--debounce", "50")
    try:
        assert eventually(lambda: "rc-w6_web" in sandbox.netns_names() and sandbox.link("eth0", "rc-w6_web")
                          is not None and _addresses(sandbox, "eth0", "rc-w6_web"), ["fd00:68:1::2/64"],
                          timeout=20) == ["fd00:68:1::2/64"]
        assert eventually(lambda: _default6(sandbox, "rc-w6_web").startswith("default via fd00:68:1::1"), True)
        # The agent follows a new namespace once the apply that made it is done (its status
        # Synced): drift in between would wait for the resync.
        assert eventually(lambda: (watch_row(sandbox, "w6") or {}).get("sync"), "Synced") == "Synced"
        time.sleep(0.3)
        repairs_before = len(_kernel_repairs(agent))
        sandbox.run("ip", "-n", "rc-w6_web", "addr", "del", "fd00:68:1::2/64", "dev", "eth0")
        assert eventually(lambda: _addresses(sandbox, "eth0", "rc-w6_web"), ["fd00:68:1::2/64"]) == [
            "fd00:68:1::2/64"]
        sandbox.run("ip", "-n", "rc-w6_web", "-6", "route", "del", "default")
        assert eventually(lambda: _default6(sandbox, "rc-w6_web").startswith("default via fd00:68:1::1"), True)
        # the log line comes after the repair
        both = {"endpoint", "sandbox"}
        assert eventually(lambda: _repaired_kinds(agent, repairs_before) & both, both)
    finally:
        assert agent.stop() == 0
    sandbox.reconcile("down", "--stack", "w6", check=True)
    assert sandbox.our_links() == []


def _repaired_kinds(agent: Agent, since: int) -> set[object]:
    return {record["kind"] for record in _kernel_repairs(agent)[since:]}


def _kernel_repairs(agent: Agent) -> list[dict[str, object]]:
    return [record for record in list(agent.lines)
            if record.get("event") == "change" and str(record.get("why", "")).startswith("kernel")]


def test_a_store_made_before_ipv6_keeps_working(tmp_path: Path) -> None:
    """Read-only (diff, status) it has no leases6 table: no IPv6 leases; opened for writing it
    gets the table, and the IPv4 leases stay."""
    old = sqlite3.connect(tmp_path / DB_NAME)
    old.executescript("CREATE TABLE leases (stack TEXT NOT NULL, container TEXT NOT NULL, network TEXT NOT NULL,"
                      " address TEXT NOT NULL, PRIMARY KEY (stack, container, network));"
                      "INSERT INTO leases VALUES ('s', 'c', 'n', '10.0.0.2');")
    old.close()
    readonly = Store.open_readonly(tmp_path)
    assert (readonly.leases(), readonly.leases6()) == ({("s", "c", "n"): IPv4Address("10.0.0.2")}, {})
    readonly.close()
    store = Store.open(tmp_path)
    store.replace_leases({"t"}, {}, {("t", "c", "n"): IPv6Address("fd00::2")})
    assert (store.leases(), store.leases6()) == ({("s", "c", "n"): IPv4Address("10.0.0.2")},
                                                 {("t", "c", "n"): IPv6Address("fd00::2")})
    store.close()
