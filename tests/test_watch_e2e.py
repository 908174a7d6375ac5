"""`reconcile watch` end to end: an agent in a sandbox, driven by files and by drift made
behind its back, observed only through the kernel, `status` and its log."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.procs import Proc, read_proc
from tests import cgroupfs
from tests.canary import planted
from tests.firewall_canaries import CANARY6, ip6tables_foreign
from tests.firewall_view import (
    IPTABLES,
    NFTABLES,
    OUR_TABLE,
    backend_in_use,
    chain_rules,
    delete_rule,
    flush_chain,
    our_rules,
)
from tests.sandbox import Sandbox
from tests.waiting import eventually, scaled
from tests.watch_agent import NETWORKS, Agent, has_address, save_atomically, watch_row

SERVICE = """\
name: svc
networks:
  front: {subnet: 10.81.1.0/24}
containers:
  web:
    command: sleep 100000
    networks: [front]
    ports: ["8081:80"]
    resources: {memory: 64Mi}
"""


METRICS_PORT = 9469
RESYNC = scaled(3)
"""The agent fixture's resync: long enough that a repair the kernel announces comes from its
event, not from a resync pass that happened to start first (scaled as every wait is: on an
emulated guest a pass takes seconds), short enough for what raises no event."""


@pytest.fixture
def specs(sandbox: Sandbox) -> Path:
    directory = sandbox.workdir / "specs"
    directory.mkdir()
    return directory


@pytest.fixture
def agent(sandbox: Sandbox, specs: Path) -> Iterator[Agent]:
    running = Agent(sandbox, specs, "--resync", f"{RESYNC:g}", "--debounce", "50",
                    "--metrics-addr", f"127.0.0.1:{METRICS_PORT}")
    assert eventually(lambda: running.saw("agent started"), True)
    yield running
    assert running.stop() == 0


def test_files_written_edited_broken_and_deleted(sandbox: Sandbox, specs: Path, agent: Agent) -> None:
    a, b = specs / "a.yaml", specs / "b.yaml"
    save_atomically(a, NETWORKS.format(name="a", subnet="10.80.1.0/24"))
    assert eventually(lambda: has_address(sandbox, "rc-a-net", "10.80.1.1/24"), True)

    save_atomically(a, NETWORKS.format(name="a", subnet="10.80.2.0/24"))  # edited: converged
    assert eventually(lambda: has_address(sandbox, "rc-a-net", "10.80.2.1/24"), True)

    save_atomically(a, NETWORKS.format(name="a", subnet="10.80.2.0/33"))  # broken
    row = eventually(lambda: (watch_row(sandbox, "a") or {}).get("sync"), "Error")
    assert row == "Error"
    error = watch_row(sandbox, "a")["error"]
    assert f"{a}:3:" in error and "networks.net.subnet" in error
    assert agent.saw("spec invalid", file=str(a), kept="last good spec")
    save_atomically(b, NETWORKS.format(name="b", subnet="10.80.3.0/24"))  # other stacks are unaffected
    assert eventually(lambda: has_address(sandbox, "rc-b-net", "10.80.3.1/24"), True)
    assert has_address(sandbox, "rc-a-net", "10.80.2.1/24")  # still on the last good spec

    save_atomically(a, NETWORKS.format(name="a", subnet="10.80.2.0/24"))  # fixed: Synced again
    assert eventually(lambda: (watch_row(sandbox, "a") or {}).get("sync"), "Synced") == "Synced"

    a.unlink()  # deleted: pruned
    assert eventually(lambda: sandbox.link("rc-a-net"), None) is None
    assert eventually(lambda: agent.saw("pruned", stack="a"), True)
    assert [s["name"] for s in sandbox.status()["stacks"]] == ["b"]
    assert sandbox.link("rc-b-net") is not None


def test_no_prune_keeps_a_deleted_stack(sandbox: Sandbox, specs: Path) -> None:
    agent = Agent(sandbox, specs, "--no-prune", "--debounce", "50")
    try:
        path = specs / "keep.yaml"
        save_atomically(path, NETWORKS.format(name="keep", subnet="10.80.4.0/24"))
        assert eventually(lambda: sandbox.link("rc-keep-net") is not None, True)
        path.unlink()
        assert eventually(lambda: agent.saw("stack kept", stack="keep"), True)
        assert sandbox.link("rc-keep-net") is not None
    finally:
        assert agent.stop() == 0
    sandbox.reconcile("down", "--stack", "keep", check=True)


def _container(sandbox: Sandbox) -> dict[str, object]:
    return sandbox.containers().get("web", {})


def _dnat_rules(sandbox: Sandbox, backend: str, ip6: bool = False) -> list[str]:
    """Our DNAT rules of port 8081 in one family (both backends bracket an IPv6 target)."""
    return [spec for spec in chain_rules(sandbox, backend, "RECONCILE-DNAT", ip6)
            if "8081" in spec and ("[" in spec) == ip6]


def test_drift_is_repaired_without_a_file_change(sandbox: Sandbox, specs: Path, agent: Agent) -> None:
    save_atomically(specs / "svc.yaml", SERVICE)
    assert eventually(lambda: _container(sandbox).get("state"), "running", timeout=10) == "running"
    assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced") == "Synced"
    pid = _container(sandbox)["pid"]
    veth = next(link["ifname"] for link in sandbox.our_links() if link["ifname"].startswith("rcv"))

    sandbox.run("ip", "link", "del", veth)  # a deleted veth: back, same process
    assert eventually(lambda: sandbox.link(veth) is not None, True)
    assert eventually(lambda: _container(sandbox).get("ips"), {"front": "10.81.1.2"}) == {"front": "10.81.1.2"}
    assert _container(sandbox)["pid"] == pid

    backend = backend_in_use(sandbox)
    rule = _dnat_rules(sandbox, backend)
    assert len(rule) == 1
    delete_rule(sandbox, backend, "RECONCILE-DNAT", rule[0])  # a deleted DNAT rule
    assert eventually(lambda: _dnat_rules(sandbox, backend), rule) == rule

    os.kill(int(pid), signal.SIGKILL)  # a killed container: restarted
    assert eventually(lambda: _container(sandbox).get("restarts"), 1) == 1
    assert eventually(lambda: _container(sandbox).get("state"), "running") == "running"

    limit = cgroupfs.limit_file(f"{sandbox.cgroup_parent}/svc/web", "memory")
    limit.write_text(str(32 << 20))  # a rewritten cgroup file: repaired by the resync
    assert eventually(lambda: limit.read_text().strip(), str(64 << 20), timeout=10) == str(64 << 20)

    repairs = [record for record in agent.lines
               if record.get("event") == "change" and str(record.get("why", "")).startswith("kernel")]
    assert {record["kind"] for record in repairs} >= {"endpoint", "port", "container"}
    assert all(isinstance(record["ms"], float) and record["reason"] is not None for record in repairs)

    def samples() -> dict[str, float]:
        metrics = sandbox.python("import urllib.request; print(urllib.request.urlopen("
                                 f"'http://127.0.0.1:{METRICS_PORT}/metrics').read().decode())").stdout
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines() if line and not line.startswith("#")}

    # Counted once the pass that repaired the cgroup file returns, a moment after the kernel has it.
    repaired = [f'reconcile_repairs_total{{kind="{kind}"}}' for kind in ("endpoint", "port", "container", "cgroup")]
    assert eventually(lambda: all(samples().get(name, 0) >= 1 for name in repaired), True)
    assert samples()['reconcile_duration_seconds_count{result="ok"}'] >= 5
    assert samples()["reconcile_queue_depth"] >= 0


def test_a_state_store_deleted_under_the_agent_is_made_anew_and_followed(sandbox: Sandbox, specs: Path,
                                                                        agent: Agent) -> None:
    """The agent's own connection held the deleted file: its status rows went nowhere and the
    pids it follows were the past's. It opens the new store and goes on."""
    save_atomically(specs / "svc.yaml", SERVICE)
    assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced") == "Synced"
    (sandbox.state_dir / "state.db").unlink()
    pid = _container(sandbox)["pid"]
    os.kill(int(pid), signal.SIGKILL)  # restarted by a pass, which makes the new store
    assert eventually(lambda: _container(sandbox).get("state"), "running") == "running"
    assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced", timeout=scaled(10)) == "Synced"
    second = _container(sandbox)["pid"]
    os.kill(int(second), signal.SIGKILL)  # followed through the new store's record
    assert eventually(lambda: _container(sandbox).get("pid") not in (None, second), True) is True
    assert agent.saw("store replaced")
    # Replaced by a file that is not a database: kept aside, a new one made (by the next pass:
    # the resync), the agent goes on. (No third kill: a third exit in a minute is a crash loop.)
    partial = sandbox.state_dir / "garbage"
    partial.write_bytes(b"not a database" * 100)
    os.replace(partial, sandbox.state_dir / "state.db")
    assert eventually(lambda: [p.name for p in sandbox.state_dir.glob("state.db.damaged-*")] != [], True,
                      timeout=scaled(10)) is True
    assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced", timeout=scaled(10)) == "Synced"
    assert agent.proc.poll() is None and _container(sandbox).get("state") == "running"
    assert not [line for line in agent.lines if line.get("event") == "error"]


def test_a_host_end_whose_ipv6_was_switched_on_is_repaired_by_event(sandbox: Sandbox, specs: Path) -> None:
    """No resync comes during the test: the link-local address the kernel gives the end is the
    event the repair follows, and the process is left as it runs."""
    agent = Agent(sandbox, specs, "--resync", "3600", "--debounce", "50")
    try:
        save_atomically(specs / "svc.yaml", SERVICE)
        assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced") == "Synced"
        pid = _container(sandbox)["pid"]
        veth = next(link["ifname"] for link in sandbox.our_links() if link["ifname"].startswith("rcv"))
        switch = f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"
        sandbox.run("sysctl", "-qw", f"net.ipv6.conf.{veth}.disable_ipv6=0")
        assert eventually(lambda: [r for r in agent.lines if r.get("kind") == "endpoint"
                                   and f"ifname='{veth}'" in str(r.get("why"))] != [], True, timeout=15)
        assert eventually(lambda: sandbox.run("cat", switch).stdout, "1\n") == "1\n"
        assert "inet6" not in sandbox.run("ip", "-6", "addr", "show", veth).stdout
        assert _container(sandbox)["pid"] == pid
    finally:
        assert agent.stop() == 0


def test_a_new_agent_adopts_what_runs_and_sigterm_leaves_it_running(sandbox: Sandbox, specs: Path) -> None:
    save_atomically(specs / "svc.yaml", SERVICE)
    first = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: _container(sandbox).get("state"), "running", timeout=10) == "running"
    finally:
        assert first.stop() == 0
    pid = _container(sandbox)["pid"]
    assert _container(sandbox)["state"] == "running"  # SIGTERM left the workload alone

    second = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: second.saw("agent started"), True)
        assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced") == "Synced"
    finally:
        assert second.stop() == 0
    assert _container(sandbox)["pid"] == pid and _container(sandbox)["restarts"] == 0
    assert not second.saw("change")


def _parents(pid: int, count: int) -> list[Proc]:
    """`pid`'s parent, its parent's parent ...: the first `count` of them."""
    chain: list[Proc] = []
    proc = read_proc(pid)
    while proc is not None and len(chain) < count and (proc := read_proc(proc.ppid)) is not None:
        chain.append(proc)
    return chain


def test_the_agent_runs_on_jemalloc_and_what_it_starts_does_not(sandbox: Sandbox, specs: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """kernel/memory.py: the agent re-executes itself with jemalloc preloaded, then keeps the
    preload from the runtime and the waiting shell it starts (they inherit its environment); it
    leaves OpenSSL unloaded. Started as a user would, with no allocator settings of their own."""
    for variable in ("PYTHONMALLOC", "LD_PRELOAD", "MALLOC_CONF"):
        monkeypatch.delenv(variable, raising=False)
    save_atomically(specs / "svc.yaml", SERVICE)
    agent = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: _container(sandbox).get("state"), "running", timeout=10) == "running"
        maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
        assert "/libjemalloc.so" in maps
        assert "/libcrypto.so" not in maps  # 3.4 MiB resident: hashlib built in (kernel/memory.py)
        starters = _parents(int(_container(sandbox)["pid"]), 2)  # type: ignore[call-overload]
        assert [proc.comm for proc in starters] == ["crun", "sh"], starters
        for proc in starters:
            environment = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            assert not [v for v in environment if v.startswith((b"LD_PRELOAD=", b"MALLOC_CONF=", b"RECONCILE_PRE"))]
    finally:
        assert agent.stop() == 0


CRASHING = """\
name: crash
containers:
  loop:
    command: ["sh", "-c", "exit 3"]
  once:
    command: ["sh", "-c", "exit 3"]
    restart: "no"
"""


def test_a_crashing_container_backs_off_and_policy_no_stays_down(sandbox: Sandbox, specs: Path) -> None:
    agent = Agent(sandbox, specs, "--debounce", "50", "--restart-backoff", "1", "--restart-backoff-max", "2")
    try:
        save_atomically(specs / "crash.yaml", CRASHING)
        assert eventually(lambda: agent.saw("restart held", key="crash/container/loop"), True, timeout=10)
        def held() -> tuple[object, bool]:  # one read: the row is rewritten between restarts
            row = watch_row(sandbox, "crash") or {}
            return row.get("sync"), "CrashLoopBackOff" in str(row.get("error"))
        assert eventually(held, ("OutOfSync", True)) == ("OutOfSync", True)
        def waits() -> set[object]:
            return {record["wait_s"] for record in agent.lines if record.get("event") == "restart held"}

        assert eventually(lambda: {1.0, 2.0} <= waits(), True, timeout=20)  # doubled...
        assert max(waits()) <= 2.0  # ...then capped
        rows = sandbox.containers()
        assert rows["once"]["state"] == "exited" and rows["once"]["restarts"] == 0
    finally:
        assert agent.stop() == 0
    sandbox.reconcile("down", "--stack", "crash", check=True)


def test_a_crash_looping_container_given_a_new_spec_starts_its_backoff_over(sandbox: Sandbox, specs: Path) -> None:
    """As a new pod in Kubernetes: the fixed (here, still failing) container is not held by the
    delay its old spec's crashes had built up."""
    agent = Agent(sandbox, specs, "--debounce", "50", "--restart-backoff", "20", "--restart-backoff-max", "60")
    try:
        save_atomically(specs / "crash.yaml", CRASHING)

        def holds(after: int) -> list[float]:
            return [float(record["wait_s"]) for record in agent.lines[after:]  # type: ignore[arg-type]
                    if record.get("event") == "restart held" and record.get("key") == "crash/container/loop"]

        assert eventually(lambda: bool(holds(0)), True, timeout=scaled(15))
        assert 15 < holds(0)[0] <= 20  # the old spec's first hold: the next would be 40 s
        edited = len(agent.lines)
        save_atomically(specs / "crash.yaml", CRASHING.replace('"exit 3"]\n  once', '"sleep 1; exit 4"]\n  once'))

        def started_anew() -> int | None:  # where the new spec's container was started
            return next((index for index, record in enumerate(agent.lines) if index >= edited
                         and record.get("event") == "change" and record.get("key") == "crash/container/loop"
                         and record.get("why") == "spec changed"), None)

        assert eventually(lambda: started_anew() is not None, True, timeout=scaled(15))
        new_run = started_anew()
        assert new_run is not None
        assert eventually(lambda: bool(holds(new_run)), True, timeout=scaled(15))
        assert 15 < holds(new_run)[0] <= 20  # restarted at once after its first crash, then held 20 s
    finally:
        assert agent.stop() == 0
    sandbox.reconcile("down", "--stack", "crash", check=True)


def test_a_missing_directory_is_a_clear_error(sandbox: Sandbox) -> None:
    result = sandbox.reconcile("watch", str(sandbox.workdir / "nope"))
    assert result.returncode == 1 and result.stderr.strip().endswith("nope: not a directory")


def test_a_restart_while_a_file_is_invalid_keeps_its_stack_on_the_last_applied_spec(
        sandbox: Sandbox, specs: Path) -> None:
    path = specs / "a.yaml"
    save_atomically(path, NETWORKS.format(name="a", subnet="10.80.5.0/24"))
    first = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: (watch_row(sandbox, "a") or {}).get("sync"), "Synced") == "Synced"
    finally:
        assert first.stop() == 0
    save_atomically(path, NETWORKS.format(name="a", subnet="10.80.5.0/33"))  # broken while no agent runs
    second = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: second.saw("spec adopted", stack="a"), True)
        sandbox.run("ip", "addr", "flush", "dev", "rc-a-net")  # drift is still repaired
        assert eventually(lambda: has_address(sandbox, "rc-a-net", "10.80.5.1/24"), True)
        row = watch_row(sandbox, "a") or {}
        assert row.get("sync") == "Error" and "networks.net.subnet" in str(row.get("error"))
    finally:
        assert second.stop() == 0
    assert not second.saw("pruned")
    sandbox.reconcile("down", "--stack", "a", check=True)


BROKEN_ON_THIS_HOST = """\
name: other
containers:
  job:
    command: sleep 100000
    volumes: ["/nonexistent/reconcile-test:/data"]
"""


@pytest.mark.parametrize("broken", ["other", "zzz"])
def test_a_stack_that_cannot_apply_does_not_stop_the_others_resync(sandbox: Sandbox, specs: Path,
                                                                   agent: Agent, broken: str) -> None:
    """Whichever stack's key comes first: the pass of the one that sorts first carries the
    other's key along, and a spec error of the rider's must not fail (or hold) it."""
    save_atomically(specs / f"{broken}.yaml", BROKEN_ON_THIS_HOST.replace("name: other", f"name: {broken}"))
    save_atomically(specs / "svc.yaml", SERVICE)  # valid, but the other's volume is missing here
    assert eventually(lambda: _container(sandbox).get("state"), "running", timeout=10) == "running"
    assert eventually(lambda: (watch_row(sandbox, broken) or {}).get("sync"), "Error") == "Error"
    limit = cgroupfs.limit_file(f"{sandbox.cgroup_parent}/svc/web", "memory")
    limit.write_text(str(32 << 20))  # only the resync (every RESYNC seconds here) puts it back
    assert eventually(lambda: limit.read_text().strip(), str(64 << 20), timeout=10) == str(64 << 20)
    assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced") == "Synced"
    assert "volume source" in str((watch_row(sandbox, broken) or {}).get("error"))


NOT_STARTABLE = """\
name: half
networks:
  net: {subnet: 10.81.3.0/24}
containers:
  app:
    command: no-such-program
    networks: [net]
  web:
    command: sleep 600
    networks: [net]
"""
"""Two starts of one batch: `web`'s is made, `app`'s fails."""


def test_a_reconcile_that_fails_still_logs_the_changes_it_made(sandbox: Sandbox, specs: Path, agent: Agent) -> None:
    save_atomically(specs / "half.yaml", NOT_STARTABLE)  # the network is made, `app` cannot start
    assert eventually(lambda: (watch_row(sandbox, "half") or {}).get("sync"), "Error") == "Error"
    assert "command not found in the container: no-such-program" in str(watch_row(sandbox, "half")["error"])
    assert sandbox.link("rc-half-net") is not None
    assert eventually(lambda: agent.saw("error", key="half"), True)
    lines = list(agent.lines)  # the reader thread goes on appending (and the agent retrying)
    failed = next(i for i, record in enumerate(lines) if record.get("event") == "error" and record.get("key") == "half")
    made = {(record["kind"], record["object"]) for record in lines[:failed] if record.get("event") == "change"}
    assert ("network", "half/net") in made  # logged once made, though its reconcile then failed
    assert ("container", "half/web") in made  # and so is the start made in the batch that failed
    assert ("container", "half/app") not in made


def test_a_start_made_by_a_reconcile_that_failed_is_repaired_by_its_exit_event(sandbox: Sandbox, specs: Path) -> None:
    """`web` started in a batch whose other start fails: its exit is followed all the same, not
    left to the failing stack's retries (which back off to a minute) or the resync."""
    agent = Agent(sandbox, specs, "--resync", "600", "--debounce", "50")
    try:
        save_atomically(specs / "half.yaml", NOT_STARTABLE)

        def backed_off() -> bool:  # the stack's next retry is seconds away
            return any(record.get("event") == "error" and record.get("key") == "half"
                       and float(str(record.get("retry_in_s") or 0)) >= 3 for record in list(agent.lines))

        assert eventually(backed_off, True, timeout=30)
        before = len(agent.lines)
        os.kill(int(sandbox.containers()["web"]["pid"]), signal.SIGKILL)

        def restarted_why() -> object:
            return next((record.get("why") for record in list(agent.lines)[before:]
                         if record.get("event") == "change" and record.get("object") == "half/web"), None)

        why = eventually(lambda: restarted_why() is not None, True, timeout=10) and restarted_why()
        assert str(why).startswith("kernel:"), why
    finally:
        assert agent.stop() == 0
        sandbox.reconcile("down", "--stack", "half", check=True)


def holding(lock: Path) -> subprocess.Popen[bytes]:
    """A process holding the state dir's lock, as a manual apply would (its pid in the file),
    until `released`: as long as the test needs, however slow the machine."""
    return subprocess.Popen(["flock", str(lock), "sh", "-c", f"echo $$ > {lock}; exec cat >/dev/null"],
                            stdin=subprocess.PIPE)


def released(holder: subprocess.Popen[bytes]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()  # its `cat` ends: the lock is let go
    holder.wait(10)


GONE = """\
name: gone
networks:
  net: {subnet: 10.81.4.0/24}
containers:
  c1: {command: sleep 100000, networks: [net]}
  c2: {command: sleep 100000, networks: [net]}
"""


def test_a_deleted_stack_is_pruned_whole_though_a_key_of_one_of_its_containers_comes_first(
        sandbox: Sandbox, specs: Path) -> None:
    """The worker busy (waiting for a manual apply's lock) while the file is deleted and then
    one of its containers exits: the exit's key comes out before the stack's own, and its pass
    must not declare the stack pruned with c2 and the network still there (no resync here to
    come along and cover the whole host)."""
    agent = Agent(sandbox, specs, "--debounce", "50", "--resync", "600")
    try:
        save_atomically(specs / "gone.yaml", GONE)
        assert eventually(lambda: sorted(c.get("state") for c in sandbox.containers().values()),
                          ["running", "running"]) == ["running", "running"]
        lock = sandbox.state_dir / "lock"
        holder = holding(lock)
        try:
            assert eventually(lambda: lock.exists() and lock.read_text().strip().isdigit(), True)
            save_atomically(specs / "b.yaml", NETWORKS.format(name="b", subnet="10.81.5.0/24"))
            assert eventually(lambda: agent.saw("waiting"), True)  # the worker is in b's pass, waiting
            pid = int(sandbox.containers()["c1"]["pid"])
            (specs / "gone.yaml").unlink()
            time.sleep(0.5)  # the file's event queued first (debounce 50 ms)
            os.kill(pid, signal.SIGKILL)
        finally:
            released(holder)
        assert eventually(lambda: agent.saw("pruned", stack="gone"), True, timeout=scaled(20))
        assert eventually(lambda: sandbox.containers(), {}, timeout=scaled(10)) == {}
        assert eventually(lambda: sandbox.link("rc-gone-net"), None) is None
    finally:
        assert agent.stop() == 0


def test_waiting_for_a_manual_apply_is_logged_as_json(sandbox: Sandbox, specs: Path, agent: Agent) -> None:
    lock = sandbox.state_dir / "lock"
    holder = holding(lock)
    try:
        assert eventually(lambda: lock.exists() and lock.read_text().strip().isdigit(), True)
        save_atomically(specs / "a.yaml", NETWORKS.format(name="a", subnet="10.80.6.0/24"))
        assert eventually(lambda: agent.saw("waiting"), True)
    finally:
        released(holder)
    assert eventually(lambda: has_address(sandbox, "rc-a-net", "10.80.6.1/24"), True)
    # agent.stop() in the fixture finds no line that is not JSON


DUAL_STACK_SERVICE = SERVICE.replace("{subnet: 10.81.1.0/24}", '{subnet: 10.81.1.0/24, subnet6: "fd00:81:1::/64"}')
"""SERVICE on a dual-stack network: its port has an IPv4 and an IPv6 DNAT rule."""


@pytest.mark.parametrize("choice", ["nftables", "iptables"])
def test_firewall_drift_is_repaired_by_event(sandbox: Sandbox, specs: Path, choice: str) -> None:
    """On either backend, whatever the suite's backend: a deleted DNAT rule of either family
    (with nft, or iptables / ip6tables), and on nftables a flushed chain and the whole
    `inet reconcile` table deleted, are each repaired by the kernel's event (the resync is an
    hour away), and the foreign rules (the canary's, iptables' and ip6tables', the canary's
    `inet` table) stay byte-identical."""
    with planted(sandbox) as canary:
        sandbox.run("ip6tables-restore", "--noflush", input=CANARY6)
        foreign = canary.snapshot(), ip6tables_foreign(sandbox)
        backend = {"nftables": NFTABLES, "iptables": IPTABLES}[choice]
        agent = Agent(sandbox, specs, "--firewall-backend", choice, "--resync", "3600", "--debounce", "50")
        try:
            save_atomically(specs / "svc.yaml", DUAL_STACK_SERVICE)
            assert eventually(lambda: _container(sandbox).get("state"), "running", timeout=10) == "running"
            assert eventually(lambda: (watch_row(sandbox, "svc") or {}).get("sync"), "Synced") == "Synced"
            ours = sorted(our_rules(sandbox, backend))  # a repaired rule may come back elsewhere in its chain
            (rule,), (rule6,) = (_dnat_rules(sandbox, backend, ip6) for ip6 in (False, True))
            drifts = {
                "rule": lambda: delete_rule(sandbox, backend, "RECONCILE-DNAT", rule),
                "rule6": lambda: delete_rule(sandbox, backend, "RECONCILE-DNAT", rule6, ip6=True),
            }
            if backend == NFTABLES:
                drifts |= {"chain": lambda: flush_chain(sandbox, NFTABLES, "RECONCILE-FORWARD"),
                           "table": lambda: sandbox.run("nft", "delete", "table", *OUR_TABLE.split())}
            kinds: dict[str, set[str]] = {}
            for name, drift in drifts.items():
                mark = len(agent.lines)
                drift()
                # The drift took effect: seen, or repaired already (a repair can beat this read).
                assert sorted(our_rules(sandbox, backend)) != ours or eventually(
                    lambda: any(record.get("event") == "change" for record in agent.lines[mark:]), True), name
                assert eventually(lambda: sorted(our_rules(sandbox, backend)), ours) == ours, name
                assert eventually(lambda: any(record.get("event") == "change" for record in agent.lines[mark:]),
                                  True), name
                repairs = [record for record in agent.lines[mark:] if record.get("event") == "change"]
                assert all(str(record["why"]).startswith("kernel:") for record in repairs), (name, repairs)
                kinds[name] = {str(record["kind"]) for record in repairs}
                assert (canary.snapshot(), ip6tables_foreign(sandbox)) == foreign, name
            # A rule's event names its owner (the comment the rule keeps in its userdata); a
            # chain's or the table's is host-wide.
            assert kinds == {"rule": {"port"}, "rule6": {"port"}, "chain": {"firewall"},
                             "table": {"firewall", "port"}} if backend == NFTABLES else {
                "rule": {"port"}, "rule6": {"port"}}

            # The [::1] proxy of the port, killed: its exit is the event, a new one listens.
            (killed, argv), = sandbox.proxies().items()
            mark = len(agent.lines)
            os.kill(killed, signal.SIGKILL)
            restarted = [(True, argv)]
            assert eventually(lambda: [(pid != killed, a) for pid, a in sandbox.proxies().items()],
                              restarted) == restarted
            repaired = [("proxy", True)]
            assert eventually(lambda: [(r["kind"], str(r["why"]).startswith("kernel:")) for r in agent.lines[mark:]
                                       if r.get("event") == "change"], repaired) == repaired
        finally:
            assert agent.stop() == 0
        sandbox.reconcile("down", "--stack", "svc", check=True)
        assert our_rules(sandbox, backend) == [] and sandbox.proxies() == {}
        assert (canary.snapshot(), ip6tables_foreign(sandbox)) == foreign


def test_status_tells_the_rows_of_a_stopped_agent_from_those_of_a_running_one(sandbox: Sandbox,
                                                                               specs: Path) -> None:
    """Once the agent is gone nothing repairs drift: its last row says Synced all the same, so
    status says no agent runs (the agent's flock on the state dir's watch.lock, which the
    kernel lets go of however it ends)."""
    agent = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: agent.saw("agent started"), True, timeout=30)
        save_atomically(specs / "a.yaml", NETWORKS.format(name="a", subnet="10.80.8.0/24"))
        assert eventually(lambda: (watch_row(sandbox, "a") or {}).get("sync"), "Synced", timeout=30) == "Synced"
        assert (watch_row(sandbox, "a") or {}).get("agent_running") is True
    finally:
        assert agent.stop() == 0
    assert (watch_row(sandbox, "a") or {}).get("agent_running") is False
    assert "  watch (no agent running; it last said): Synced, last apply " in sandbox.reconcile("status").stdout
    sandbox.reconcile("down", "--stack", "a", check=True)


def test_a_stack_applied_by_hand_is_the_agents_once_a_watched_file_declares_it(sandbox: Sandbox,
                                                                               specs: Path) -> None:
    """The same spec applied by hand from another file, which still declares it: the agent's
    pass changes nothing on the host, and the stack is recorded as applied from the watched file
    all the same (status agreed with itself only once the file was edited, and `down DIR` was
    refused as another file's stack)."""
    text = NETWORKS.format(name="h", subnet="10.80.9.0/24")
    sandbox.apply(sandbox.write("h.yaml", text))
    save_atomically(specs / "h.yaml", text)
    agent = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: agent.saw("agent started"), True, timeout=30)

        def source() -> object:
            return next((s["source"] for s in sandbox.status()["stacks"] if s["name"] == "h"), None)
        assert eventually(source, str(specs / "h.yaml"), timeout=30) == str(specs / "h.yaml")
    finally:
        assert agent.stop() == 0
    down = sandbox.reconcile("down", str(specs))
    assert down.returncode == 0 and sandbox.link("rc-h-net") is None, down.stdout + down.stderr
