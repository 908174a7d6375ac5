"""Concurrency, through real CLI processes in one Sandbox with the foreign canary planted:

- two applies of different stacks at once both succeed: the second waits on the state dir's
  lock, saying so, then converges its own stack;
- two applies of one stack serialize: the second waits, then finds nothing left to do (never a
  half-applied host);
- `diff` and `status`, run over and over while an apply and a down are under way, never crash:
  exit 0 or 2 (diff), 0 (status), never a traceback.

"At once" is made certain, not hoped for: the first writer stops a container that ignores
SIGTERM, so it holds the lock through that container's stop grace (far longer than any test
needs) until the test has seen what it waits for (the second apply waiting, the reads made) and
SIGKILLs the container itself. No window is sized for the machine's speed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.canary import Canary, planted
from tests.leaks import leftovers
from tests.reliability import record
from tests.sandbox import Sandbox
from tests.waiting import eventually, scaled

STOP_GRACE = 300
"""Seconds a writer would wait for `slow` to exit before killing it: never reached, the test
kills `slow` once it has seen what it waits for."""
STACK = """\
name: {name}
networks:
  n: {{subnet: 10.95.{subnet}.0/24}}
containers:
  slow:
    command: ["sh", "-c", "trap '' TERM; while :; do sleep 1; done; # {generation}"]
    networks: [n]
    ports: ["{port}:80"]
    resources: {{memory: 32Mi, pids: 16}}
    stop_grace: {grace}
  peer:
    command: sleep 100001
    networks: [n]
    depends_on: [slow]
"""
WAITING = "waiting for another reconcile"
READS_PER_WRITE = 3
"""Reads of each kind (`diff`, `status`) made while each writer holds the lock."""


def write_stack(sandbox: Sandbox, name: str, generation: int, subnet: int, port: int) -> str:
    """Each generation of a stack is an edit of its one file (another file declaring it would be
    refused while this one does)."""
    text = STACK.format(name=name, generation=generation, subnet=subnet, port=port, grace=STOP_GRACE)
    return str(sandbox.write(f"{name}.yaml", text))


class Cli:
    """A CLI run in the background, its output (stdout and stderr, as they come) in a file the
    test can read while it runs."""

    def __init__(self, sandbox: Sandbox, *args: str) -> None:
        self._output = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(["nsenter", "-t", str(sandbox.pid), "-n", "-m", "--",
                                      sys.executable, "-m", "reconcile", *args],
                                     stdout=self._output, stderr=subprocess.STDOUT, text=True, env=sandbox.env)

    def output(self) -> str:
        self._output.seek(0)
        return self._output.read()

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=scaled(60))
        text = self.output()
        self._output.close()
        return code, text


def slow_pids(sandbox: Sandbox) -> list[int]:
    """The init of every stack's `slow`."""
    return [int(c["pid"]) for s in sandbox.status()["stacks"] for c in s["containers"]
            if c["name"] == "slow" and c.get("pid")]


def slow_pid(sandbox: Sandbox) -> int:
    (pid,) = slow_pids(sandbox)
    return pid


def holding_lock(sandbox: Sandbox, writer: Cli) -> None:
    """Wait until the writer holds the state dir's lock (it writes its pid into the lock file once
    it has it; nsenter without --pid execs the CLI, so the pids agree)."""
    lock = sandbox.state_dir / "lock"
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline and writer.proc.poll() is None:
        if lock.exists() and lock.read_text().strip() == str(writer.proc.pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"the first apply never held the lock (exit {writer.proc.poll()}): {writer.output()}")


def released_once(ready: Callable[[], bool], pid: int, timeout: float = 60) -> None:
    """Once `ready` holds, SIGKILL `slow` (`pid`), which the writer holding the lock is stopping:
    the writer goes on. Killed in any case, so that a failed wait does not leave the writer
    waiting out the stop grace."""
    try:
        eventually(ready, True, timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def applied_at_once(sandbox: Sandbox, first: str, second: str) -> tuple[tuple[int, str], tuple[int, str]]:
    """(exit, output) of `apply first` (a recreate of the running `slow`) and of `apply second`,
    started once the first holds the lock; `slow` is killed once the second says it waits."""
    pid = slow_pid(sandbox)
    leader = Cli(sandbox, "apply", first)
    holding_lock(sandbox, leader)
    follower = Cli(sandbox, "apply", second)
    released_once(lambda: WAITING in follower.output(), pid)
    return leader.finish(), follower.finish()


def ok(sandbox: Sandbox, *args: str) -> str:
    result = sandbox.reconcile(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def running_with_next(sandbox: Sandbox) -> str:
    """Stack `rel` applied; returns its next generation (a recreate of `slow`)."""
    ok(sandbox, "apply", write_stack(sandbox, "rel", 1, subnet=1, port=18201))
    return write_stack(sandbox, "rel", 2, subnet=1, port=18201)


def in_sync_then_down(sandbox: Sandbox, *paths: str) -> None:
    for path in paths:
        ok(sandbox, "diff", path)
    for pid in slow_pids(sandbox):  # so that `down` need not wait out their stop grace
        os.kill(pid, signal.SIGKILL)
    for path in paths:
        ok(sandbox, "down", path)


@pytest.fixture
def canary(sandbox: Sandbox) -> Iterator[Canary]:
    """The canary, byte-identical at the end, and nothing of ours left after the test's downs."""
    with planted(sandbox) as planted_canary:
        before = planted_canary.snapshot()
        yield planted_canary
        assert leftovers(sandbox) == []
        assert planted_canary.snapshot() == before


def test_two_stacks_applied_at_once_both_converge(sandbox: Sandbox, canary: Canary) -> None:
    one_next = running_with_next(sandbox)
    two = write_stack(sandbox, "two", 1, subnet=2, port=18202)
    # The first recreates `slow`: it holds the lock until the second waits for it.
    (code1, out1), (code2, out2) = applied_at_once(sandbox, one_next, two)
    assert code1 == 0 and code2 == 0, out1 + out2
    assert WAITING in out2 and "Traceback" not in out1 + out2
    in_sync_then_down(sandbox, one_next, two)
    record("concurrency", different_stacks_at_once=2)


def test_one_stack_applied_twice_at_once_serializes(sandbox: Sandbox, canary: Canary) -> None:
    target = running_with_next(sandbox)
    (code1, out1), (code2, out2) = applied_at_once(sandbox, target, target)
    assert code1 == 0 and "-/+ container rel/slow" in out1, out1
    assert code2 == 0 and WAITING in out2 and "No changes." in out2, out2
    in_sync_then_down(sandbox, target)
    record("concurrency", same_stack_at_once=2)


def test_diff_and_status_during_apply_and_down_never_crash(sandbox: Sandbox, canary: Canary) -> None:
    target = running_with_next(sandbox)
    exits: Counter[str] = Counter()
    crashes: list[str] = []

    def poll(writer: Cli, counted: Counter[str], *args: str, allowed: tuple[int, ...]) -> None:
        while writer.proc.poll() is None:
            result = sandbox.reconcile(*args)
            exits[f"{args[0]} {result.returncode}"] += 1
            counted[args[0]] += 1
            if result.returncode not in allowed or "Traceback" in result.stdout + result.stderr:
                crashes.append(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")

    for verb in ("apply", "down"):
        pid = slow_pid(sandbox)
        writer = Cli(sandbox, verb, target)  # each stops `slow`: held until the reads are made
        holding_lock(sandbox, writer)
        during: Counter[str] = Counter()
        readers = [threading.Thread(target=poll, args=(writer, during, "diff", target), kwargs={"allowed": (0, 2)}),
                   threading.Thread(target=poll, args=(writer, during, "status", "-o", "json"),
                                    kwargs={"allowed": (0,)})]
        for reader in readers:
            reader.start()
        released_once(lambda: min(during["diff"], during["status"]) >= READS_PER_WRITE, pid)
        code, output = writer.finish()
        for reader in readers:
            reader.join()
        assert code == 0, output
    record("concurrency", reads_during_writes=sum(exits.values()),
           **{f"reads_{key.replace(' ', '_exit_')}": n for key, n in exits.items()})
    assert not crashes, "\n\n".join(crashes)
