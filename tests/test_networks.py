"""Bridge networks end to end, as a user runs the CLI, on the real kernel (inside a sandbox)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from tests.sandbox import Sandbox

STACK = """\
name: demo
networks:
  front:
    subnet: 10.88.1.0/24
  back:
    subnet: 10.88.2.0/24
    internal: true
    mtu: 1400
"""

FRONT_ONLY = """\
name: demo
networks:
  front:
    subnet: 10.88.1.0/24
"""


@pytest.fixture
def canary(sandbox: Sandbox) -> str:
    """A foreign bridge with an address and a foreign veth pair enslaved to it."""
    sandbox.sh("ip link add br-canary type bridge && ip addr add 192.168.77.1/24 dev br-canary"
               " && ip link set br-canary up && ip link add vc0 type veth peer name vc1"
               " && ip link set vc0 master br-canary")
    # No IPv6 on the canaries: link-local addresses change state on their own (DAD).
    for name in ("br-canary", "vc0", "vc1"):
        sandbox.run("sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1")
    return sandbox.snapshot("br-canary", "vc0", "vc1")


def _apply(sandbox: Sandbox, path: str) -> str:
    result = sandbox.reconcile("apply", path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _diff(sandbox: Sandbox, path: str) -> tuple[int, str]:
    result = sandbox.reconcile("diff", path)
    assert result.returncode in (0, 2), result.stderr
    return result.returncode, result.stdout


def test_round_trip(sandbox: Sandbox, canary: str) -> None:
    path = str(sandbox.write("stack.yaml", STACK))

    out = _apply(sandbox, path)
    assert "+ network demo/front" in out and "+ network demo/back" in out
    assert "Apply complete: 5 added, 1 changed, 0 destroyed." in out  # + ip_forward, chains, 2 rule sets

    front = sandbox.link("rc-demo-front")
    assert front is not None
    assert front["ifalias"] == "reconcile/v1 network demo/front"
    assert front["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in front["flags"] and front["mtu"] == 1500
    assert [(a["local"], a["prefixlen"]) for a in front["addr_info"] if a["family"] == "inet"] == [
        ("10.88.1.1", 24)]
    back = sandbox.link("rc-demo-back")
    assert back is not None and back["mtu"] == 1400
    assert sandbox.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"

    assert _diff(sandbox, path) == (0, "No changes. The host matches the spec.\n")
    assert _apply(sandbox, path) == "No changes. The host matches the spec.\n"

    # Drift by hand, one kind at a time: diff names it (exit 2), apply repairs it.
    for drift, expected in [
        ("ip addr del 10.88.1.1/24 dev rc-demo-front", "addresses: [] → [10.88.1.1/24]"),
        ("ip link set rc-demo-front down", "up: False → True"),
        ("ip link set rc-demo-back mtu 1500", "mtu: 1500 → 1400"),
        ("ip addr add 10.88.2.99/24 dev rc-demo-back",
         "addresses: [10.88.2.1/24, 10.88.2.99/24] → [10.88.2.1/24]"),
        ("ip link del rc-demo-front", "+ network demo/front"),
    ]:
        sandbox.sh(drift)
        code, out = _diff(sandbox, path)
        assert code == 2, drift
        assert expected in out, (drift, out)
        _apply(sandbox, path)
        assert _diff(sandbox, path)[0] == 0, drift

    # A network removed from the spec is pruned; only ours.
    sandbox.write("stack.yaml", FRONT_ONLY)
    out = _apply(sandbox, path)
    assert "- network demo/back (no longer in the spec)" in out
    assert sandbox.link("rc-demo-back") is None

    out = sandbox.reconcile("down", path)
    assert out.returncode == 0, out.stderr
    assert "- network demo/front" in out.stdout
    assert sandbox.our_links() == []
    assert sandbox.snapshot("br-canary", "vc0", "vc1") == canary


def test_diff_touches_nothing(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", STACK))
    before = (sandbox.run("ip", "-d", "addr").stdout, sandbox.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout)
    code, out = _diff(sandbox, path)
    assert code == 2
    assert "Plan: 5 to add, 1 to change, 0 to destroy." in out
    after = (sandbox.run("ip", "-d", "addr").stdout, sandbox.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout)
    assert before == after
    assert not sandbox.state_dir.exists() or list(sandbox.state_dir.iterdir()) == []

    _apply(sandbox, path)
    store_before = sorted((p.name, p.read_bytes()) for p in sandbox.state_dir.iterdir())
    sandbox.sh("ip link set rc-demo-front down")
    assert _diff(sandbox, path)[0] == 2
    assert sorted((p.name, p.read_bytes()) for p in sandbox.state_dir.iterdir()) == store_before
    assert "UP" not in sandbox.link("rc-demo-front")["flags"]


def test_diff_json(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", FRONT_ONLY))
    result = sandbox.reconcile("diff", "-o", "json", path)
    assert result.returncode == 2
    plan = json.loads(result.stdout)
    assert plan["summary"] == {"add": 3, "change": 1, "destroy": 0}
    assert plan["in_sync"] is False
    create = next(c for c in plan["changes"] if c["kind"] == "network")
    assert create["action"] == "create" and create["key"] == "demo/front"
    assert {"path": "bridge", "old": None, "new": "rc-demo-front"} in create["fields"]


def test_foreign_link_holding_our_name_is_an_error_and_nothing_changes(sandbox: Sandbox) -> None:
    sandbox.sh("ip link add rc-demo-front type bridge")
    before = sandbox.run("ip", "-d", "addr").stdout
    path = sandbox.write("stack.yaml", STACK)
    result = sandbox.reconcile("apply", str(path))
    assert result.returncode == 1
    index = sandbox.link("rc-demo-front")["ifindex"]
    assert result.stderr == (
        f"{path}:3:3: networks.front.bridge: bridge name 'rc-demo-front' is taken by a link "
        f"reconcile does not own (kind bridge, index {index}); remove it or set "
        "networks.front.bridge to another name\n")
    assert "Traceback" not in result.stderr
    assert sandbox.run("ip", "-d", "addr").stdout == before


def test_subnet_overlapping_a_host_address_names_the_interface(sandbox: Sandbox) -> None:
    sandbox.sh("ip link add uplink type veth peer name uplink-peer && ip addr add 10.88.0.5/16 dev uplink")
    before = sandbox.run("ip", "-d", "addr").stdout
    path = sandbox.write("stack.yaml", FRONT_ONLY)
    result = sandbox.reconcile("apply", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:4:13: networks.front.subnet: ")
    assert "overlaps 10.88.0.0/16 on interface uplink (address)" in result.stderr
    assert sandbox.run("ip", "-d", "addr").stdout == before


def test_lost_state_dir_converges_without_duplicates(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", STACK))
    _apply(sandbox, path)
    sandbox.run("rm", "-rf", str(sandbox.state_dir))
    assert _apply(sandbox, path) == "No changes. The host matches the spec.\n"
    assert len(sandbox.our_links()) == 2
    status = json.loads(sandbox.reconcile("status", "-o", "json").stdout)
    assert [s["name"] for s in status["stacks"]] == ["demo"]
    assert sandbox.reconcile("down", "--stack", "demo").returncode == 0
    assert sandbox.our_links() == []


def test_interrupted_bridge_creation_is_finished(sandbox: Sandbox) -> None:
    """A crash between creating the bridge (group set) and marking it (alias) is recovered."""
    sandbox.sh("ip link add rc-demo-front group 29283 type bridge")
    path = str(sandbox.write("stack.yaml", FRONT_ONLY))
    out = _apply(sandbox, path)
    assert "-/+ network demo/front (recreate: finish an interrupted creation)" in out
    assert sandbox.link("rc-demo-front")["ifalias"] == "reconcile/v1 network demo/front"
    assert _diff(sandbox, path)[0] == 0


def test_status_reports_networks_and_drift(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", STACK))
    _apply(sandbox, path)
    sandbox.sh("ip link set rc-demo-back down")
    status = json.loads(sandbox.reconcile("status", "-o", "json").stdout)
    (stack,) = status["stacks"]
    assert stack["name"] == "demo" and stack["sync"] == "OutOfSync"
    assert stack["networks"] == [
        {"name": "front", "bridge": "rc-demo-front", "subnet": "10.88.1.0/24",
         "gateway": "10.88.1.1", "subnet6": None, "gateway6": None, "state": "up"},
        {"name": "back", "bridge": "rc-demo-back", "subnet": "10.88.2.0/24",
         "gateway": "10.88.2.1", "subnet6": None, "gateway6": None, "state": "down"},
    ]
    assert [d["key"] for d in stack["drift"]] == ["demo/back"]
    text = sandbox.reconcile("status").stdout
    assert "stack demo: OutOfSync" in text and "rc-demo-back" in text


COUNTED_STATUS = """\
import contextlib, io, sys
from reconcile import cli
from reconcile.engine.session import Session
observe = Session.observe
calls = []
def counted(self, focus=None, usage_of=frozenset()):
    calls.append(focus)
    return observe(self, focus, usage_of)
Session.observe = counted
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(sys.argv[1:])
print(code, len(calls))
"""


@pytest.mark.parametrize("with_path", [False, True], ids=["known stacks", "stack file"])
def test_status_observes_the_host_once(sandbox: Sandbox, with_path: bool) -> None:
    """The stacks' names and their rows come from one observation: a second one cost ~0.3 s
    at 1,000 containers."""
    path = str(sandbox.write("stack.yaml", STACK))
    _apply(sandbox, path)
    args = ["status", "-o", "json", *([path] if with_path else [])]
    assert sandbox.run(sys.executable, "-c", COUNTED_STATUS, *args).stdout == "0 1\n"


def test_other_stacks_are_left_alone_and_overlaps_across_stacks_are_errors(sandbox: Sandbox) -> None:
    a = str(sandbox.write("a.yaml", "name: alpha\nnetworks:\n  net:\n    subnet: 10.90.0.0/24\n"))
    b = sandbox.write("b.yaml", "name: beta\nnetworks:\n  net:\n    subnet: 10.90.0.0/25\n")
    _apply(sandbox, a)
    result = sandbox.reconcile("apply", str(b))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{b}:4:13: networks.net.subnet: ")
    assert "network 'net' of stack 'alpha'" in result.stderr
    sandbox.write("b.yaml", "name: beta\nnetworks:\n  net:\n    subnet: 10.91.0.0/24\n")
    _apply(sandbox, str(b))
    assert sandbox.reconcile("down", str(b)).returncode == 0
    assert [link["ifname"] for link in sandbox.our_links()] == ["rc-alpha-net"]


def test_concurrent_applies_serialize_on_the_lock(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", FRONT_ONLY))
    sandbox.state_dir.mkdir(exist_ok=True)
    # Held until the CLI says it waits (however long its start-up takes on a busy machine).
    held = os.open(sandbox.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        cli = subprocess.Popen(["nsenter", "-t", str(sandbox.pid), "-n", "-m", "--",
                                sys.executable, "-m", "reconcile", "apply", path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sandbox.env)
        assert cli.stderr is not None
        said = cli.stderr.readline()
    finally:
        os.close(held)
    out, err = cli.communicate(timeout=120)
    assert "waiting for another reconcile" in said, said + err
    assert cli.returncode == 0, err
    assert "+ network demo/front" in out
