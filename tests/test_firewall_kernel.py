"""The firewall controller against the real kernel (iptables-nft, inside a sandbox): rendered
text reads back identically, the round trip (apply, no-op, drift, repair, scope, teardown)
with foreign rules byte-identical throughout, conflicts with a live listener, backend errors."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from kernel.netfilter import parse_save
from specs.names import OUR_CHAINS
from tests.firewall_canaries import CANARY
from tests.firewall_plans import BOTH, DEMO, OTHER, converge, desired
from tests.firewall_support import (
    FakeBackend,
    foreign_rules,
    heads,
    our_rules,
    run_controller,
)
from tests.sandbox import Sandbox


@pytest.fixture
def host(sandbox: Sandbox) -> str:
    """The sandbox with our bridges present (route_localnet is per interface) and the foreign
    canary planted; returns the canary as iptables-save shows it."""
    sandbox.sh("for b in rcbr0 rcbr1 rcbr9; do ip link add $b type bridge; done")
    sandbox.run("iptables-restore", "--noflush", input=CANARY)
    return foreign_rules(sandbox)


def _assert_converged(sandbox: Sandbox, doc: dict, canary: str) -> None:
    assert heads(run_controller(sandbox, "plan", doc)) == []
    assert foreign_rules(sandbox) == canary


def test_rendered_text_is_what_iptables_save_prints(sandbox: Sandbox, host: str) -> None:
    """The diff compares strings: every rule we render must come back from the kernel verbatim,
    in every chain, in the same order."""
    run_controller(sandbox, "apply", BOTH)
    fake = FakeBackend()
    converge(desired(BOTH["stacks"]), fake)
    real = parse_save(sandbox.run("iptables-save").stdout)
    hooked = [("nat", "PREROUTING"), ("nat", "OUTPUT"), ("nat", "POSTROUTING"),
              ("filter", "INPUT"), ("filter", "FORWARD")]
    for table, chain in [*OUR_CHAINS, *hooked]:
        ours = [r for r in real.tables[table][chain].rules if "reconcile/v1" in r]
        assert ours == list(fake.ruleset.tables[table][chain].rules), (table, chain)
    assert len(our_rules(sandbox)) == 8 + 8 + (9 + 3 + 9) + 3  # chains, skeleton, networks, ports


DNAT_8080 = ('-p tcp -m tcp --dport 8080 -m comment --comment "reconcile/v1 port demo/web/8080/tcp" '
             "-j DNAT --to-destination 10.88.1.10:80")


@pytest.mark.parametrize(("drift", "expected"), [
    (f"iptables -t nat -D RECONCILE-DNAT {DNAT_8080}", ("create", "port", "demo/web/8080/tcp")),
    ("iptables -t nat -F RECONCILE-SNAT", ("update", "firewall", "demo/front")),
    ("iptables -t nat -F RECONCILE-SNAT", ("update", "firewall", "other/net")),
    ("iptables -D FORWARD 1", ("update", "firewall", "chains")),  # our jump, inserted first
    ("iptables -A RECONCILE-ACCEPT -j ACCEPT", ("update", "firewall", "chains")),
    ("iptables -F RECONCILE-FORWARD", ("update", "firewall", "chains")),
    ("sysctl -qw net.ipv4.conf.rcbr0.route_localnet=0", ("update", "firewall", "demo/front")),
])
def test_round_trip_repairs_drift_and_leaves_foreign_rules_alone(
        sandbox: Sandbox, host: str, drift: str, expected: tuple[str, str, str]) -> None:
    first = run_controller(sandbox, "apply", BOTH)
    assert ("create", "firewall", "chains") in heads(first) and first["issues"] == []
    _assert_converged(sandbox, BOTH, host)
    assert heads(run_controller(sandbox, "apply", BOTH)) == []

    sandbox.sh(drift)
    assert expected in heads(run_controller(sandbox, "plan", BOTH))
    run_controller(sandbox, "apply", BOTH)
    _assert_converged(sandbox, BOTH, host)


def test_scope_and_teardown(sandbox: Sandbox, host: str) -> None:
    run_controller(sandbox, "apply", BOTH)
    others = [line for line in our_rules(sandbox) if "other/" in line]

    removed = run_controller(sandbox, "apply", {"stacks": {}, "scope": ["demo"]})
    assert {kind for _, kind, key in heads(removed) if key.startswith("demo/")} == {"firewall", "port"}
    assert [line for line in our_rules(sandbox) if "demo/" in line] == []
    assert [line for line in our_rules(sandbox) if "other/" in line] == others
    _assert_converged(sandbox, {"stacks": {"other": OTHER}}, host)

    run_controller(sandbox, "apply", {"stacks": {}, "scope": ["other"]})
    assert our_rules(sandbox) == []
    assert foreign_rules(sandbox) == host


def test_teardown_keeps_going_past_a_chain_a_foreign_rule_jumps_to(sandbox: Sandbox, host: str) -> None:
    run_controller(sandbox, "apply", BOTH)
    sandbox.run("iptables", "-A", "INPUT", "-j", "RECONCILE-INPUT")
    everything = {"stacks": {}, "scope": ["demo", "other"]}

    result = run_controller(sandbox, "apply", everything)
    assert result["errors"] == [
        "chain filter RECONCILE-INPUT was emptied but not deleted: rules that are not reconcile's to delete "
        "jump to it (`-j RECONCILE-INPUT` in chain filter INPUT); delete them and run again"]
    assert our_rules(sandbox) == [":RECONCILE-INPUT - [0:0]"]  # the rest of both tables is gone

    sandbox.run("iptables", "-D", "INPUT", "-j", "RECONCILE-INPUT")
    assert run_controller(sandbox, "apply", everything)["errors"] == []
    assert our_rules(sandbox) == [] and foreign_rules(sandbox) == host


@pytest.fixture
def listener(sandbox: Sandbox) -> Iterator[int]:
    """A foreign process listening on port 8080 (busybox binds [::], dual-stack) on the sandbox host."""
    pid = int(sandbox.sh("busybox nc -l -p 8080 >/dev/null 2>&1 & echo $!").stdout)
    try:
        sandbox.sh("i=0; until grep -qs ':1F90 .* 0A ' /proc/net/tcp /proc/net/tcp6; do i=$((i+1)); "
                   "[ $i -gt 50 ] && exit 1; sleep 0.1; done")
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_port_held_by_a_host_process_is_reported_and_nothing_is_touched(
        sandbox: Sandbox, host: str, listener: int) -> None:
    result = run_controller(sandbox, "apply", {"stacks": {"demo": DEMO}})
    assert result["issues"] == [{
        "stack": "demo", "loc": ["containers", "web", "ports", 0],
        "message": f"host port 8080/tcp is in use: busybox (pid {listener}) listening on [::]:8080/tcp"}]
    assert our_rules(sandbox) == []


def test_a_refused_batch_changes_nothing_and_names_the_line(sandbox: Sandbox, host: str) -> None:
    code = """
from kernel.netfilter import IptablesNft, NetfilterError, Op, OpKind
try:
    IptablesNft().apply([Op(OpKind.DECLARE_CHAIN, "filter", "RECONCILE-ACCEPT"),
                         Op(OpKind.DELETE_RULE, "filter", "INPUT", "-p tcp -j DROP")])
except NetfilterError as exc:
    print(exc)
"""
    out = sandbox.python(code).stdout
    assert out.startswith("iptables-restore refused the batch at `-D INPUT -p tcp -j DROP`: ")
    assert our_rules(sandbox) == [] and foreign_rules(sandbox) == host


def test_the_host_backend_is_detected(sandbox: Sandbox) -> None:
    assert sandbox.python("from kernel import netfilter; print(netfilter.detect().name)").stdout == (
        "iptables-nft\n")
