"""Drift repair latency of `reconcile watch`, and its memory with many containers.

Latency: the agent watches a stack (two networks, two published containers with limits); each
trial makes one drift by hand and times from just before the command that makes it to the
agent's log line for the repair (written once the repair is applied), then checks the kernel
agrees. p50/p90 over TRIALS trials per kind. RSS: the agent's resident memory (VmRSS, and the
peak VmHWM) once it has converged N containers and gone quiet.

Run as root: `.venv/bin/python bench/drift.py` (it re-executes itself in a throwaway host).
BENCH_TRIALS (default 20) and BENCH_RSS_SIZES (default 200,1000; empty for none) shrink a run.
BENCH_FIREWALL_BACKEND (iptables or nftables; default nftables, what the CLI's default `auto`
picks in the throwaway host) picks the backend the agent runs on, and so which tool makes the
rule drifts; nftables adds a "table deleted" kind (the whole `inet reconcile` table). The run's
state dir and stack directory are removed afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, print_table, reconcile, reexec_in_throwaway_host, remove_state_dir  # noqa: E402

TRIALS = int(os.environ.get("BENCH_TRIALS", "20"))
RSS_SIZES = tuple(int(n) for n in os.environ.get("BENCH_RSS_SIZES", "200,1000").split(",") if n)
BACKEND = os.environ.get("BENCH_FIREWALL_BACKEND", "nftables")
"""The firewall backend the agent runs, and whose rules the drifts break: by default what `auto`
picks in the throwaway host (nftables: nft works there, and no foreign FORWARD policy drops)."""
NFT_TABLE = ("inet", "reconcile")

STACK = """\
name: drift
networks:
  front: {subnet: 10.63.1.0/24}
  back: {subnet: 10.63.2.0/24, internal: true}
containers:
  web:
    command: sleep 100000
    networks: [front, back]
    ports: ["8090:80"]
    resources: {memory: 64Mi}
  api:
    command: sleep 100000
    networks: [front]
    ports: ["8091:80"]
"""


class Agent:
    """The agent as a user runs it, with its JSON log read line by line."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.lines: list[dict[str, object]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(reconcile("watch", str(directory), "--restart-stable", "0.5"),
                                     env=env, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()

    def wait_for(self, match: Callable[[dict[str, object]], bool], after: int,
                 timeout: float = 30) -> dict[str, object]:
        """The first log line from index `after` on that matches."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((record for record in self.lines[after:] if match(record)), None)
                if found is not None:
                    return found
                if not self._cond.wait(deadline - time.monotonic()) and time.monotonic() > deadline:
                    raise SystemExit(f"no matching agent log line within {timeout} s: {self.lines[after:][-5:]}")

    def quiet(self, seconds: float = 1.0, timeout: float = 600) -> None:
        """Wait until the agent has logged nothing for `seconds` (converged, no churn left)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            if len(self.lines) == seen:
                return
            seen = len(self.lines)
            time.sleep(seconds)
        raise SystemExit("the agent never went quiet")

    def memory_kib(self) -> tuple[int, int]:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def _environment() -> tuple[dict[str, str], str]:
    parent = f"rc-bench-{uuid.uuid4().hex[:8]}"
    return {**os.environ, "RECONCILE_STATE_DIR": tempfile.mkdtemp(prefix="rc-bench-"),
            "RECONCILE_CGROUP_PARENT": parent, "PYTHONPATH": str(REPO), "NO_COLOR": "1",
            "RECONCILE_FIREWALL_BACKEND": BACKEND}, parent


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _status(env: dict[str, str]) -> dict[str, dict[str, object]]:
    document = json.loads(subprocess.run(reconcile("status", "-o", "json"), env=env, check=True,
                                         capture_output=True, text=True).stdout)
    return {c["name"]: c for s in document["stacks"] for c in s["containers"]}


def _veth_of(endpoint: str) -> str:
    """The host end of an endpoint (`stack/container/network`), found by its alias."""
    for line in _run("ip", "-o", "link", "show").splitlines():
        if f"endpoint {endpoint}" in line:
            return line.split(": ")[1].split("@")[0]
    raise SystemExit(f"no veth of {endpoint}")


def _dnat_rule(port: int) -> list[str]:
    line = next(rule for rule in _run("iptables-save", "-t", "nat").splitlines()
                if rule.startswith("-A RECONCILE-DNAT") and f"--dport {port}" in rule)
    return shlex.split(line)[2:]


def _nft_dnat_handle(port: int) -> str:
    """The handle of our DNAT rule for a port in the nftables backend's table."""
    chain = _run("nft", "-a", "list", "chain", *NFT_TABLE, "RECONCILE-DNAT")
    return next(rule.rsplit(" ", 1)[1] for rule in chain.splitlines() if f"dport {port} " in rule)


def _is_port(record: dict[str, object]) -> bool:
    return record.get("kind") == "port"


def dnat_rule_deleted(port: int) -> DriftKind:
    """One published port's DNAT rule deleted with the backend's own tool."""
    if BACKEND == "iptables":
        return (lambda: _command("iptables", "-t", "nat", "-D", "RECONCILE-DNAT", *_dnat_rule(port)),
                _is_port, lambda: bool(_dnat_rule(port)))
    return (lambda: _command("nft", "delete", "rule", *NFT_TABLE, "RECONCILE-DNAT", "handle", _nft_dnat_handle(port)),
            _is_port, lambda: bool(_nft_dnat_handle(port)))


def _rule_drifts() -> dict[str, DriftKind]:
    """The rule drifts for the backend in use: a deleted DNAT rule, a flushed chain (and on
    nftables the whole table deleted), each repaired as the port's change."""
    if BACKEND == "iptables":
        return {
            "DNAT rule deleted": dnat_rule_deleted(8090),
            "chain flushed": (lambda: _command("iptables", "-t", "nat", "-F", "RECONCILE-DNAT"),
                              _is_port, lambda: bool(_dnat_rule(8091))),
        }
    return {
        "DNAT rule deleted": dnat_rule_deleted(8090),
        "chain flushed": (lambda: _command("nft", "flush", "chain", *NFT_TABLE, "RECONCILE-DNAT"),
                          _is_port, lambda: bool(_nft_dnat_handle(8091))),
        "table deleted": (lambda: _command("nft", "delete", "table", *NFT_TABLE),
                          lambda record: record.get("kind") in ("port", "firewall"),
                          lambda: bool(_nft_dnat_handle(8090)) and bool(_nft_dnat_handle(8091))),
    }


Drift = Callable[[], Callable[[], object]]
"""Looks up what to break (outside the timing) and returns the command that breaks it."""
DriftKind = tuple[Drift, Callable[[dict[str, object]], bool], Callable[[], bool]]
"""A kind of drift: the drift, which agent log line is its repair, and the kernel check after."""


def _command(*argv: str) -> Callable[[], object]:
    return lambda: _run(*argv)


def veth_deleted(endpoint: str) -> DriftKind:
    """The host end of an endpoint (`stack/container/network`) deleted."""
    def veth_back() -> bool:
        try:
            socket.if_nametoindex(_veth_of(endpoint))
            return True
        except (OSError, SystemExit):
            return False

    return (lambda: _command("ip", "link", "del", _veth_of(endpoint)),
            lambda record: record.get("kind") == "endpoint", veth_back)


def container_killed(env: dict[str, str], name: str) -> DriftKind:
    """A container's process SIGKILLed (its pid read from `status` before the timing)."""
    def kill() -> Callable[[], object]:
        pid = int(_status(env)[name]["pid"])  # type: ignore[call-overload]
        return lambda: os.kill(pid, signal.SIGKILL)

    return (kill, lambda record: record.get("kind") == "container",
            lambda: _status(env)[name]["state"] == "running")


def _drifts(env: dict[str, str]) -> dict[str, DriftKind]:
    """Per kind: the drift, which log line is its repair, and the kernel check after."""
    def address_back() -> bool:
        return "10.63.1.1/24" in _run("ip", "-o", "addr", "show", "dev", "rc-drift-front")

    return {
        "veth deleted": veth_deleted("drift/web/front"),
        "address removed": (lambda: _command("ip", "addr", "del", "10.63.1.1/24", "dev", "rc-drift-front"),
                            lambda record: record.get("kind") == "network", address_back),
        **_rule_drifts(),
        "container killed": container_killed(env, "web"),
    }


def _soon(check: Callable[[], bool], within: float = 10.0) -> bool:
    """A flushed chain comes back over one or two reconciles (riders): the timed repair is the
    first; the check waits for the rest. Seconds enough for a few `status` runs, which take
    ~2 s beside 1,000 containers at a busy hour."""
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return True
        except (StopIteration, subprocess.CalledProcessError):  # not back yet (a table still missing)
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


@contextmanager
def watching(stack: str, text: str) -> Iterator[tuple[Agent, dict[str, str]]]:
    """The agent watching a directory of one stack file, with a fresh state dir and cgroup
    parent; afterwards the agent is stopped, the stack taken down and everything removed."""
    env, parent = _environment()
    directory = Path(tempfile.mkdtemp())
    (directory / f"{stack}.yaml").write_text(text)
    agent = Agent(directory, env)
    try:
        yield agent, env
    finally:
        agent.stop()
        subprocess.run(reconcile("down", "--stack", stack), env=env, check=True, capture_output=True)
        _remove_cgroup_parent(parent)
        remove_state_dir(Path(env["RECONCILE_STATE_DIR"]))
        shutil.rmtree(directory, ignore_errors=True)


def repair_times(agent: Agent, kind: str, drift: DriftKind, trials: int) -> list[float]:
    """Seconds from just before each drift to the agent's log line of its repair, `trials` times;
    each repair is checked against the kernel, and the agent left to settle between trials."""
    make, is_repair, check = drift
    samples = []
    for _ in range(trials):
        breaks = make()
        mark = len(agent.lines)
        before = time.time()
        breaks()
        repair = agent.wait_for(lambda record: record.get("event") == "change" and is_repair(record), mark)
        samples.append(float(repair["ts"]) - before)  # type: ignore[arg-type]
        if not _soon(check):
            raise SystemExit(f"{kind}: the agent logged a repair the kernel does not show")
        agent.quiet(0.6)  # settle (and outlive --restart-stable) before the next trial
    return samples


def latency() -> list[list[object]]:
    rows: list[list[object]] = []
    with watching("drift", STACK) as (agent, env):
        agent.wait_for(lambda record: record.get("event") == "change" and record.get("kind") == "container", 0)
        agent.quiet()
        for kind, drift in _drifts(env).items():
            samples = repair_times(agent, kind, drift, TRIALS)
            deciles = statistics.quantiles(samples, n=10)
            rows.append([kind, TRIALS, statistics.median(samples) * 1000, deciles[8] * 1000, max(samples) * 1000])
    return rows


def _many(n: int) -> str:
    containers = "".join(f"  c{i}:\n    command: sleep 100000\n    networks: [net]\n" for i in range(n))
    return f"name: many\nnetworks:\n  net:\n    subnet: 10.62.0.0/21\ncontainers:\n{containers}"


def converge(agent: Agent, env: dict[str, str], stack: str, n: int) -> float:
    """Seconds until the agent has started the stack's N containers c0..c{N-1} from an empty
    host and gone quiet; fails unless all N then run."""
    start = time.monotonic()
    agent.wait_for(lambda record: record.get("event") == "change" and record.get("kind") == "container"
                   and record.get("object") == f"{stack}/c{n - 1}", 0, timeout=900)
    agent.quiet(2.0)
    converged = time.monotonic() - start
    running = sum(1 for c in _status(env).values() if c["state"] == "running")
    if running != n:
        raise SystemExit(f"{running} of {n} containers running")
    return converged


def rss(n: int) -> list[object]:
    with watching("many", _many(n)) as (agent, env):
        converged = converge(agent, env, "many", n)
        rss_kib, peak_kib = agent.memory_kib()
        return [n, rss_kib / 1024, peak_kib / 1024, converged]


def _remove_cgroup_parent(parent: str) -> None:
    for directory in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
        directory.rmdir()


def main() -> None:
    reexec_in_throwaway_host()
    print_table(["drift", "trials", "p50 ms", "p90 ms", "max ms"], latency())
    if RSS_SIZES:
        print()
        print_table(["containers", "agent RSS MB", "peak RSS MB", "converged in s"], [rss(n) for n in RSS_SIZES])


if __name__ == "__main__":
    main()
