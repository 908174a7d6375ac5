"""Kill anywhere: `reconcile` SIGKILLed just before its N-th write (kernel/crashpoints.py) must
leave a host that the next run converges, and that `down` empties of everything of ours.

Each scenario first runs once, whole, with RECONCILE_STEP_LOG to learn how many writes it makes
and of which kinds; then, for each chosen point N, on a fresh sandbox with the foreign canary
planted: set up, run the verb with RECONCILE_CRASH_AT=N (it must die of SIGKILL), run it again
(exit 0, `diff` in sync), `down`, and find nothing of ours left and the canary byte-identical.

Points are deterministic: the first and last step of every label kind (so every kind of write
is interrupted), then points spread evenly over the run. Two sandboxes run at once (the machines
have two cores and a run mostly waits on the kernel)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.canary import planted
from tests.leaks import leftovers
from tests.reliability import record
from tests.sandbox import Sandbox

pytestmark = [pytest.mark.kernel,  # its Sandboxes are built in a module-scoped fixture
              pytest.mark.slow]

STACK = Path(__file__).resolve().parent / "stacks" / "reliability.yaml"
GENERATION = ("sleep 100001", "sleep 100002")
"""The recreate scenario's change: three of the four containers get a new command."""
WORKERS = 2
KILLED = (-9, 137)  # SIGKILL seen directly, or through a shell


@dataclass(frozen=True)
class Scenario:
    """`setup` runs clean, `verb` on `target` is killed at step N and then run again whole;
    `points` steps are chosen (all of them in a shorter run), at least `minimum`."""

    name: str
    setup: tuple[tuple[str, str], ...]
    verb: str
    target: str
    points: int
    minimum: int

    @property
    def converges_to(self) -> str | None:
        """The stack file `diff` must find in sync after the second run (None after a down)."""
        return self.target if self.verb == "apply" else None


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The stack A and A' (a new generation of commands), as absolute paths: `nsenter -m` does
    not keep the working directory."""
    directory = tmp_path_factory.mktemp("stacks")
    text = STACK.read_text()
    assert GENERATION[0] in text
    recreated = directory / "reliability-next.yaml"
    recreated.write_text(text.replace(*GENERATION))
    return {"A": str(STACK), "A'": str(recreated)}


@pytest.fixture(scope="module")
def tally() -> Counter[str]:
    """Figures summed over this module's scenarios (kinds of run killed), recorded after each."""
    return Counter()


def reconcile(sandbox: Sandbox, *args: str, **env: str) -> tuple[int, str]:
    """The CLI inside the sandbox with extra environment; returns (returncode, output). An apply
    takes the stack over: A' is A's next generation in a file of its own."""
    assignments = [f"{key}={value}" for key, value in env.items()]
    if args[:1] == ("apply",):
        args = ("apply", "--take-over", *args[1:])
    result = sandbox.run("env", *assignments, sys.executable, "-m", "reconcile", *args, check=False)
    return result.returncode, result.stdout + result.stderr


def learn_steps(tmp_path: Path, scenario: Scenario, paths: dict[str, str]) -> list[str]:
    """The labels of the scenario's steps, in order, from one uninterrupted run on a host like
    the crash runs' (the canary planted: its FORWARD DROP policy is what makes the default
    `auto` firewall backend pick iptables there, and each backend writes in its own steps)."""
    box = Sandbox(tmp_path / f"{scenario.name}-learn")
    log = box.workdir / "steps.log"
    try:
        with planted(box):
            for verb, target in scenario.setup:
                assert reconcile(box, verb, paths[target])[0] == 0
            code, output = reconcile(box, scenario.verb, paths[scenario.target], RECONCILE_STEP_LOG=str(log))
            assert code == 0, output
            assert reconcile(box, "down", paths[scenario.target])[0] == 0
    finally:
        box.close()
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def choose_points(labels: Sequence[str], count: int) -> list[int]:
    """`count` distinct step numbers (1-based): the first and last of each label kind, then
    the midpoints of the widest gaps left, so the points spread over the whole run."""
    chosen = {labels.index(kind) + 1 for kind in set(labels)}
    chosen |= {len(labels) - labels[::-1].index(kind) for kind in set(labels)}
    chosen |= {1, len(labels)}
    while len(chosen) < min(count, len(labels)):
        ordered = sorted(chosen)
        low, high = max(zip(ordered, ordered[1:]), key=lambda gap: (gap[1] - gap[0], -gap[0]))
        chosen.add((low + high) // 2)
    return sorted(chosen)


@dataclass(frozen=True)
class Outcome:
    point: int
    killed_at: str  # the label of the step the run died before
    problems: list[str]
    leaks: int


def run_point(workdir: Path, scenario: Scenario, paths: dict[str, str], point: int) -> Outcome:
    """One crash and recovery on a fresh sandbox; problems are collected, not raised, so one
    run reports every point that fails."""
    box = Sandbox(workdir / f"{scenario.name}-{point}")
    log = box.workdir / "steps.log"
    problems: list[str] = []
    leaks: list[str] = []
    try:
        with planted(box) as foreign:
            before = foreign.snapshot()
            for verb, target in scenario.setup:
                code, output = reconcile(box, verb, paths[target])
                assert code == 0, f"setup {verb} {target}: {output}"
            target = paths[scenario.target]
            code, output = reconcile(box, scenario.verb, target,
                                     RECONCILE_CRASH_AT=str(point), RECONCILE_STEP_LOG=str(log))
            if code not in KILLED:
                problems.append(f"{scenario.verb} at {point} was not killed: exit {code}\n{output}")
            code, output = reconcile(box, scenario.verb, target)
            if code != 0 or "Traceback" in output:
                problems.append(f"{scenario.verb} after the kill exited {code}\n{output}")
            if scenario.converges_to and (diff := reconcile(box, "diff", target))[0] != 0:
                problems.append(f"diff after recovery exited {diff[0]}\n{diff[1]}")
            code, output = reconcile(box, "down", target)
            if code != 0:
                problems.append(f"down exited {code}\n{output}")
            leaks = leftovers(box)
            if (after := foreign.snapshot()) != before:
                problems.append(f"the canary changed:\n{after}\nwas\n{before}")
    finally:
        box.close()
    if leaks:
        problems.append("left behind: " + ", ".join(leaks))
    steps = log.read_text().splitlines() if log.exists() else []
    killed_at = steps[-1].split(" ", 1)[1] if len(steps) == point else "none"
    return Outcome(point, killed_at, [f"point {point}: {p}" for p in problems], len(leaks))


def in_parallel(work: Callable[[int], Outcome], points: Sequence[int]) -> Iterator[Outcome]:
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        yield from pool.map(work, points)


SCENARIOS = [  # 52 points of 205 steps: each kind's first and last, and a few between (CI's time)
    Scenario("cold_apply", (), "apply", "A", points=24, minimum=20),
    Scenario("down", (("apply", "A"),), "down", "A", points=16, minimum=8),
    Scenario("recreate", (("apply", "A"),), "apply", "A'", points=12, minimum=8),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_killed_at_any_step_converges_and_leaves_nothing(
        tmp_path: Path, stacks: dict[str, str], tally: Counter[str], scenario: Scenario) -> None:
    labels = learn_steps(tmp_path, scenario, stacks)
    points = choose_points(labels, scenario.points)
    outcomes = list(in_parallel(lambda n: run_point(tmp_path, scenario, stacks, n), points))

    problems = [p for o in outcomes for p in o.problems]
    tally.update({"points": len(points), "scenarios": 1, "leaks": sum(o.leaks for o in outcomes),
                  "failed_points": sum(1 for o in outcomes if o.problems)})
    record("kill_anywhere", **tally, **{f"{scenario.name}_points": len(points),
                                        f"{scenario.name}_steps": len(labels),
                                        f"{scenario.name}_kinds": ", ".join(sorted(set(labels)))})
    assert not problems, "\n\n".join(problems)
    assert len(points) >= scenario.minimum
    assert {o.killed_at for o in outcomes} == set(labels), "a kind of write was never interrupted"
