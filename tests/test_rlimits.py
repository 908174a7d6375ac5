"""The hard limits a start can set (kernel.rlimits), read by a process started with known limits
of its own: ours where root may not raise them (this project's machines), else any, nofile up to
fs.nr_open; finding out leaves the process's limits as they were."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from tests.sandbox import REPO

PROBE = """\
import json, resource
from kernel import rlimits
from specs.ulimits import NAMES
limits = lambda: [list(resource.getrlimit(rlimits.number_of(name))) for name in NAMES]
before = limits()
ceilings = rlimits.ceilings()
print(json.dumps({"before": before, "after": limits(), "raisable": ceilings.raisable, "highest": ceilings.highest}))
"""


def test_the_ceilings_are_the_hard_limits_a_start_can_set_and_reading_them_changes_none() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    lowered = min(hard, 4000)
    result = subprocess.run(["prlimit", f"--nofile=500:{lowered}", "--", sys.executable, "-c", PROBE],
                            capture_output=True, text=True, check=True, cwd=REPO)
    found = json.loads(result.stdout)
    assert found["before"] == found["after"]
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    if found["raisable"]:
        assert found["highest"] == {**{name: -1 for name in found["highest"]}, "nofile": nr_open}
    else:
        assert found["highest"]["nofile"] == lowered
        assert found["highest"]["nproc"] == resource.getrlimit(resource.RLIMIT_NPROC)[1]


DEFAULTS_PROBE = """\
import json
from kernel import rlimits
print(json.dumps(rlimits.container_defaults()))
"""


def test_a_containers_default_limits_are_the_host_inits_not_its_starters() -> None:
    """The names specs.ulimits.DEFAULTS leaves out come from PID 1, whatever limits the process
    working them out was started with (here a stack and a memlock of its own)."""
    stack = resource.getrlimit(resource.RLIMIT_STACK)[1]
    lowered = 1 << 20 if stack == resource.RLIM_INFINITY else min(stack, 1 << 20)
    result = subprocess.run(["prlimit", f"--stack={lowered}:{lowered}", "--memlock=4096:4096", "--", sys.executable,
                             "-c", DEFAULTS_PROBE], capture_output=True, text=True, check=True, cwd=REPO)
    found = {name: tuple(limits) for name, limits in json.loads(result.stdout).items()}

    def pid1(number: int) -> tuple[int, int]:
        soft, hard = resource.prlimit(1, number)
        return (-1 if soft == resource.RLIM_INFINITY else soft, -1 if hard == resource.RLIM_INFINITY else hard)

    assert found["stack"] == pid1(resource.RLIMIT_STACK) != (lowered, lowered)
    assert found["memlock"] == pid1(resource.RLIMIT_MEMLOCK) != (4096, 4096)
    assert (found["nofile"], found["core"]) == ((1024, 524288), (0, -1))  # specs.ulimits.DEFAULTS
    assert len(found) == 15
