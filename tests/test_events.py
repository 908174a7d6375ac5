"""kernel/events.py against the real kernel: a collector program runs KernelEvents inside a
sandbox (its own network and mount namespace, tmpfs /run/netns) and prints each event as a JSON
line; the test changes links, addresses, routes, namespaces, iptables-nft rules and processes
there and waits for the exact events."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest

from kernel import rtnl_wire
from kernel.events import DUMP_RETRIES, Event, ExitEvent, LinkEvent, NetnsGone, Overflow, RuleEvent, _RouteSource
from kernel.events_wire import NFPROTO_INET, NFPROTO_IPV6
from kernel.procs import read_proc
from tests.sandbox import Sandbox
from tests.waiting import eventually, scaled

COLLECTOR = """
import dataclasses, json, sys, threading, time
from kernel.events import KernelEvents

out = threading.Lock()
stalled, resume = threading.Event(), threading.Event()
def say(record):
    with out:
        print(json.dumps(record), flush=True)

def on_event(event):
    say({"type": type(event).__name__, "at": time.monotonic(), **dataclasses.asdict(event)})
    if stalled.is_set():  # a slow agent: the kernel queues meanwhile
        resume.wait()
        stalled.clear()

events = KernelEvents(on_event)
stop = threading.Event()
loop = threading.Thread(target=events.run, args=(stop,))
loop.start()
say({"type": "ready"})
for line in sys.stdin:
    command = json.loads(line)
    if "namespaces" in command:
        events.watch_namespaces(command["namespaces"])
    elif "pids" in command:
        among = [tuple(p) for p in command["among"]] if "among" in command else None
        events.watch_pids([tuple(p) for p in command["pids"]], among=among)
    elif command.get("stall"):
        resume.clear()
        stalled.set()
    else:
        resume.set()
    say({"type": "done"})
stop.set()
loop.join()
events.close()
"""

ALIAS = "reconcile/v1 network s/n"
DAD_TIMEOUT = 10.0
"""Seconds for a new IPv6 link-local address's duplicate address detection (1-2 s here)."""
PORT_COMMENT = "reconcile/v1 port s/c/8080/tcp"
Record = dict[str, Any]
"""One event as the collector printed it: its fields, "type" and "at" (time.monotonic())."""


class Collector:
    """The collector process and every event it reported so far."""

    def __init__(self, sandbox: Sandbox):
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(sandbox.pid), "-n", "-m", "--", sys.executable, "-c", COLLECTOR],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=sandbox.env)
        self.seen: list[Record] = []
        self._pending = b""
        self._next("ready")

    def _read(self, timeout: float) -> Record | None:
        """The next record, read from the raw pipe: a buffered reader would hide lines it
        already holds from select()."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            if not select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            assert chunk, "the collector died"
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        record: Record = json.loads(line)
        return record

    def _next(self, kind: str) -> None:
        while (record := self._read(5.0)) is not None:
            if record["type"] == kind:
                return
            self.seen.append(record)
        raise AssertionError(f"no {kind!r} from the collector")

    def command(self, **command: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        self._next("done")

    def wait_for(self, event: Event, timeout: float = 5.0) -> float:
        """Block until the event has been reported; returns when it was (time.monotonic)."""
        expected = {"type": type(event).__name__, "at": None, **asdict(event)}
        deadline = time.monotonic() + timeout
        found = next((r for r in self.seen if {**r, "at": None} == expected), None)
        while found is None:
            record = self._read(max(0.0, deadline - time.monotonic()))
            if record is None:
                raise AssertionError(f"{event} not reported; got:\n" + "\n".join(map(str, self.seen)))
            self.seen.append(record)
            found = record if {**record, "at": None} == expected else None
        return float(found["at"])

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        """End of input stops the collector, which must close cleanly."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=5) == 0


@pytest.fixture
def collector(sandbox: Sandbox) -> Iterator[Collector]:
    with Collector(sandbox) as watcher:
        yield watcher


def _index(sandbox: Sandbox, name: str, netns: str | None = None) -> int:
    link = sandbox.link(name, netns)
    assert link is not None
    return int(link["ifindex"])


def test_link_created_and_deleted_with_alias(sandbox: Sandbox, collector: Collector) -> None:
    """(The kernel announces an alias change only on a link that is up: netdev_state_change.)
    A port leaving its bridge (an AF_BRIDGE DELLINK) is a change of the port, not a deletion."""
    sandbox.sh(f"ip link add rc-s-n type bridge && ip link set rc-s-n alias '{ALIAS}' up"
               " && ip link add rcvtest type veth peer name rcvpeer && ip link set rcvtest master rc-s-n up")
    index, port = _index(sandbox, "rc-s-n"), _index(sandbox, "rcvtest")
    collector.wait_for(LinkEvent(None, "link", False, index, "rc-s-n", ALIAS))
    sandbox.run("ip", "link", "set", "rcvtest", "nomaster")
    sandbox.run("ip", "link", "del", "rc-s-n")
    collector.wait_for(LinkEvent(None, "link", True, index, "rc-s-n", ALIAS))
    assert not [r for r in collector.seen if r.get("ifindex") == port and r["deleted"]]


def test_address_and_route_of_an_aliased_link_name_it(sandbox: Sandbox) -> None:
    """Address and route messages carry only the ifindex: the alias comes from the cache, which
    the dump at start filled (the bridge exists before the collector here)."""
    sandbox.sh(f"ip link add rc-s-n type bridge && ip link set rc-s-n alias '{ALIAS}' up"
               " && ip addr add 10.9.0.1/24 dev rc-s-n && ip route add 10.10.0.0/24 dev rc-s-n")
    index = _index(sandbox, "rc-s-n")
    with Collector(sandbox) as collector:
        sandbox.run("ip", "route", "del", "10.10.0.0/24")
        collector.wait_for(LinkEvent(None, "route", True, index, "rc-s-n", ALIAS))
        sandbox.run("ip", "addr", "del", "10.9.0.1/24", "dev", "rc-s-n")
        collector.wait_for(LinkEvent(None, "address", True, index, "rc-s-n", ALIAS))


def test_ipv6_switched_on_at_a_host_end_is_its_link_local_address(sandbox: Sandbox, collector: Collector) -> None:
    """The switch itself is announced on no group; the link-local address the kernel then gives
    the link is. That of a veth host end of ours is news; any other link's is not."""
    endpoint = "reconcile/v1 endpoint s/c/n"
    sandbox.sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"
               " && ip link add other0 type veth peer name other1 && ip link set other1 up && ip link set other0 up"
               " && ip link add rcvtest type veth peer name rcvpeer && ip link set rcvpeer up"
               f" && ip link set rcvtest alias '{endpoint}' up")
    port, other = _index(sandbox, "rcvtest"), _index(sandbox, "other0")
    collector.wait_for(LinkEvent(None, "link", False, port, "rcvtest", endpoint))
    sandbox.sh("sysctl -qw net.ipv6.conf.other0.disable_ipv6=0 net.ipv6.conf.rcvtest.disable_ipv6=0")
    collector.wait_for(LinkEvent(None, "address", False, port, "rcvtest", endpoint), timeout=scaled(DAD_TIMEOUT))

    def announced(name: str) -> bool:  # the kernel announces a link-local address once its DAD is done
        shown = sandbox.run("ip", "-6", "addr", "show", "dev", name).stdout
        return "inet6 fe80:" in shown and "tentative" not in shown

    assert eventually(lambda: announced("other0"), True, timeout=DAD_TIMEOUT)  # it got one too
    sandbox.run("sysctl", "-qw", "net.ipv6.conf.rcvtest.disable_ipv6=1")  # switched off: nothing to repair
    sandbox.run("ip", "link", "set", "rcvtest", "down")
    collector.wait_for(LinkEvent(None, "link", False, port, "rcvtest", endpoint))  # all before it was read
    assert not [r for r in collector.seen if r.get("ifindex") == other and r.get("what") == "address"]
    assert [r["deleted"] for r in collector.seen if r.get("ifindex") == port and r.get("what") == "address"] == [False]


def test_named_namespace_events_and_its_deletion(sandbox: Sandbox, collector: Collector) -> None:
    """Events inside a watched namespace carry its name; deleting the namespace closes our
    socket, so the kernel really destroys it: the host end of its veth goes too."""
    endpoint = "reconcile/v1 endpoint s/c/n"
    sandbox.sh("ip netns add rc-s_c && ip link add rcvtest type veth peer name eth0 netns rc-s_c")
    collector.command(namespaces=["rc-s_c"])
    sandbox.sh(f"ip -n rc-s_c link set eth0 alias '{endpoint}' up"
               " && ip -n rc-s_c addr add 10.9.0.2/24 dev eth0")
    inner = _index(sandbox, "eth0", "rc-s_c")
    collector.wait_for(LinkEvent("rc-s_c", "link", False, inner, "eth0", endpoint))
    collector.wait_for(LinkEvent("rc-s_c", "address", False, inner, "eth0", endpoint))
    host = _index(sandbox, "rcvtest")
    sandbox.run("ip", "netns", "del", "rc-s_c")
    collector.wait_for(NetnsGone("rc-s_c"))
    collector.wait_for(LinkEvent(None, "link", True, host, "rcvtest", None))


def test_overflow_is_reported_and_the_alias_cache_refilled(sandbox: Sandbox, collector: Collector) -> None:
    """While the agent is stuck in a callback, a burst overflows the namespace socket's kernel
    buffer (left at the default: only the host and nf_tables sockets get a big one). The alias
    change made meanwhile is dropped; only the dump after the overflow can know it."""
    endpoint = "reconcile/v1 endpoint s/c/n"
    sandbox.sh(f"ip netns add rc-s_c && ip -n rc-s_c link add eth0 type bridge"
               f" && ip -n rc-s_c link set eth0 alias '{endpoint}' up")
    inner = _index(sandbox, "eth0", "rc-s_c")
    collector.command(namespaces=["rc-s_c"])
    collector.command(stall=True)
    burst = "".join(f"addr add 10.{i // 250}.{i % 250}.1/32 dev lo\n" for i in range(2000))
    sandbox.run("ip", "-n", "rc-s_c", "-batch", "-", input=burst)
    sandbox.run("ip", "-n", "rc-s_c", "link", "set", "eth0", "alias", "changed while dropped")
    collector.command(stall=False)
    collector.wait_for(Overflow("rc-s_c", "route"))
    sandbox.run("ip", "-n", "rc-s_c", "addr", "add", "10.99.0.1/24", "dev", "eth0")
    collector.wait_for(LinkEvent("rc-s_c", "address", False, inner, "eth0", "changed while dropped"))


def _dnat(port: int) -> list[str]:
    return ["-p", "tcp", "--dport", str(port), "-m", "comment", "--comment",
            f"reconcile/v1 port s/c/{port}/tcp", "-j", "DNAT", "--to-destination", "10.9.0.2:80"]


def test_iptables_rules_and_flush(sandbox: Sandbox, collector: Collector) -> None:
    """iptables-nft keeps `-m comment` as an xtables match; a flush deletes rule by rule."""
    other = "reconcile/v1 port s/c/8081/tcp"
    sandbox.run("iptables", "-t", "nat", "-N", "RECONCILE-DNAT")
    collector.wait_for(RuleEvent("nat", "RECONCILE-DNAT", False, None))
    sandbox.run("iptables", "-t", "nat", "-A", "RECONCILE-DNAT", *_dnat(8080))
    collector.wait_for(RuleEvent("nat", "RECONCILE-DNAT", False, PORT_COMMENT))
    sandbox.run("iptables", "-t", "nat", "-D", "RECONCILE-DNAT", *_dnat(8080))
    collector.wait_for(RuleEvent("nat", "RECONCILE-DNAT", True, PORT_COMMENT))
    sandbox.run("iptables", "-t", "nat", "-A", "RECONCILE-DNAT", *_dnat(8080))
    sandbox.run("iptables", "-t", "nat", "-A", "RECONCILE-DNAT", *_dnat(8081))
    collector.seen.clear()
    sandbox.run("iptables", "-t", "nat", "-F", "RECONCILE-DNAT")
    collector.wait_for(RuleEvent("nat", "RECONCILE-DNAT", True, PORT_COMMENT))
    collector.wait_for(RuleEvent("nat", "RECONCILE-DNAT", True, other))
    sandbox.run("iptables", "-t", "nat", "-X", "RECONCILE-DNAT")
    collector.wait_for(RuleEvent("nat", "RECONCILE-DNAT", True, None))


def test_nft_userdata_comment_and_other_families(sandbox: Sandbox, collector: Collector) -> None:
    """nft keeps a rule comment in the rule's userdata. IPv4 and IPv6 tables (iptables-nft's and
    ip6tables-nft's) are reported with their family, tables of other families are not: the IPv6
    table made after a bridge one is the first RuleEvent."""
    sandbox.run("nft", "add table bridge tb; add chain bridge tb c; add table ip6 t6; add chain ip6 t6 c;"
                " add rule ip6 t6 c counter comment \"reconcile/v1 chains\"; add table ip t; add chain ip t c;"
                " add rule ip t c counter comment \"reconcile/v1 chains\"")
    collector.wait_for(RuleEvent("t6", "c", False, "reconcile/v1 chains", NFPROTO_IPV6))
    collector.wait_for(RuleEvent("t", "c", False, "reconcile/v1 chains"))
    assert [r["table"] for r in collector.seen if r["type"] == "RuleEvent"][0] == "t6"


def test_inet_table_rule_chain_and_table_deletions(sandbox: Sandbox, collector: Collector) -> None:
    """What the agent sees when the nftables backend's `inet` table drifts: a deleted rule (its
    userdata comment), a flushed chain (rule by rule) and a deleted table (its chains, then
    itself), all in family inet."""
    comment = "reconcile/v1 port s/c/8080/tcp"
    sandbox.run("nft", "-f", "-", input=(
        "table inet rc-h17b-t {\n chain RECONCILE-DNAT {\n"
        f'  tcp dport 8080 dnat ip to 10.9.0.2:80 comment "{comment}"\n'
        '  tcp dport 8081 dnat ip to 10.9.0.2:80 comment "reconcile/v1 port s/c/8081/tcp"\n }\n'
        " chain PREROUTING {\n  type nat hook prerouting priority dstnat; policy accept;\n"
        '  fib daddr type local jump RECONCILE-DNAT comment "reconcile/v1 chains"\n }\n}\n'))
    collector.wait_for(RuleEvent("rc-h17b-t", "RECONCILE-DNAT", False, comment, NFPROTO_INET))
    handle = next(line.rsplit(" ", 1)[1] for line in sandbox.run(
        "nft", "-a", "list", "chain", "inet", "rc-h17b-t", "RECONCILE-DNAT").stdout.splitlines()
        if "8080" in line)
    collector.seen.clear()
    sandbox.run("nft", "delete", "rule", "inet", "rc-h17b-t", "RECONCILE-DNAT", "handle", handle)
    collector.wait_for(RuleEvent("rc-h17b-t", "RECONCILE-DNAT", True, comment, NFPROTO_INET))
    sandbox.run("nft", "flush", "chain", "inet", "rc-h17b-t", "PREROUTING")
    collector.wait_for(RuleEvent("rc-h17b-t", "PREROUTING", True, "reconcile/v1 chains", NFPROTO_INET))
    sandbox.run("nft", "delete", "table", "inet", "rc-h17b-t")
    collector.wait_for(RuleEvent("rc-h17b-t", "RECONCILE-DNAT", True, None, NFPROTO_INET))
    collector.wait_for(RuleEvent("rc-h17b-t", None, True, None, NFPROTO_INET))


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _start_time(pid: int) -> int:
    proc = read_proc(pid)
    assert proc is not None
    return proc.start_time


def test_killed_process_exits_at_once(collector: Collector, sleeper: subprocess.Popen[bytes]) -> None:
    collector.command(pids=[(sleeper.pid, _start_time(sleeper.pid))])
    killed_at = time.monotonic()
    os.kill(sleeper.pid, signal.SIGKILL)
    latency = collector.wait_for(ExitEvent(sleeper.pid), timeout=1.0) - killed_at
    print(f"exit reported {latency * 1000:.1f} ms after SIGKILL")


def test_dead_or_reused_pid_reports_exit_once_and_is_not_watched(
        collector: Collector, sleeper: subprocess.Popen[bytes]) -> None:
    """A (pid, start time) whose start time does not match is another process: the one asked
    about is gone. Killing the stranger afterwards must not report anything."""
    stranger = (sleeper.pid, _start_time(sleeper.pid) + 1)
    marker = subprocess.Popen(["sleep", "60"])
    try:
        collector.command(pids=[stranger, (marker.pid, _start_time(marker.pid))])
        collector.wait_for(ExitEvent(sleeper.pid))
        collector.command(pids=[stranger, (marker.pid, _start_time(marker.pid))])  # again: no repeat
        sleeper.kill()
        sleeper.wait()
        marker.kill()
        collector.wait_for(ExitEvent(marker.pid))
    finally:
        marker.kill()
        marker.wait()
    assert [r["pid"] for r in collector.seen if r["type"] == "ExitEvent"] == [sleeper.pid, marker.pid]


def test_a_partial_update_renews_only_the_watches_it_names(collector: Collector) -> None:
    """watch_pids(pids, among=...): the watches among those named are replaced by `pids`, every
    other stays (the watch agent after a focused pass): killing the one dropped reports nothing,
    killing the one kept and the one added reports both."""
    dropped, kept, added = (subprocess.Popen(["sleep", "60"]) for _ in range(3))
    try:
        key = {p.pid: (p.pid, _start_time(p.pid)) for p in (dropped, kept, added)}
        collector.command(pids=[key[dropped.pid], key[kept.pid]])
        collector.command(pids=[key[added.pid]], among=[key[dropped.pid]])
        for process in (dropped, kept, added):
            process.kill()
            process.wait()
        collector.wait_for(ExitEvent(kept.pid))
        collector.wait_for(ExitEvent(added.pid))
    finally:
        for process in (dropped, kept, added):
            process.kill()
            process.wait()
    assert sorted(r["pid"] for r in collector.seen if r["type"] == "ExitEvent") == sorted([kept.pid, added.pid])


def test_a_link_dump_the_kernel_gave_up_on_leaves_the_cache_stale() -> None:
    """The kernel ends a dump it gave up on part way with its errno in NLMSG_DONE (an ENOMEM, an
    oversized link): the link cache is then stale, as after a refused dump (NLMSG_ERROR), and
    is dumped again; a complete dump leaves it fresh. A socket of the test's own namespace."""
    complete, failed = struct.pack("=i", 0), struct.pack("=i", -errno.ENOMEM)
    assert (rtnl_wire.done_errno(complete), rtnl_wire.done_errno(failed), rtnl_wire.done_errno(b"")) == \
        (0, errno.ENOMEM, 0)
    source = _RouteSource(rtnl_wire.new_socket(), None, None)
    try:
        outcomes = []
        for kind, payload in ((rtnl_wire.NLMSG_DONE, complete), (rtnl_wire.NLMSG_DONE, failed),
                              (rtnl_wire.NLMSG_ERROR, failed)):
            source.dumping, source.stale = True, False
            source._dump_answer(kind, payload)
            outcomes.append((source.dumping, source.stale))
        assert outcomes == [(False, False), (False, True), (False, True)]
        # Dumped again at once a few times; one that keeps failing waits for the kernel's next word.
        source.failed_dumps = 0
        retried = []
        for _ in range(DUMP_RETRIES + 1):
            source.dumping = True
            source._dump_answer(rtnl_wire.NLMSG_DONE, failed)
            retried.append(source.wants_dump(heard=False))
        assert retried == [True] * DUMP_RETRIES + [False]
        assert source.wants_dump(heard=True)
        source.dumping = True
        source._dump_answer(rtnl_wire.NLMSG_DONE, complete)
        assert source.failed_dumps == 0  # a complete dump starts the count again
    finally:
        source.close()
