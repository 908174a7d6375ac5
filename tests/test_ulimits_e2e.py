"""Resource limits end to end, on the real kernel (inside a sandbox): what a container's init,
its program and an exec into it see is the spec's ulimits, or the defaults, never the limits of
the process that started it or of the one that execs (prlimit gives each CLI run others)."""

from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

from kernel import rlimits
from specs.ulimits import UNLIMITED, at_most
from tests.sandbox import Sandbox
from tests.waiting import eventually
from tests.watch_agent import Agent

STACK = """\
name: lim
containers:
  db:
    command: ["sh", "-c", "cat /proc/self/limits > /tmp/own; exec sleep 100000"]
    rootfs: {rootfs}
    ulimits:
      nofile: {{soft: 1000, hard: 2000}}
      nproc: 500
      core: -1
      stack: {{soft: 4194304, hard: unlimited}}
{extra}  plain:
    command: ["sh", "-c", "cat /proc/self/limits > /tmp/own; exec sleep 100000"]
    rootfs: {rootfs}
"""
ASKED = {"nofile": (1000, 2000), "nproc": (500, 500), "core": (UNLIMITED, UNLIMITED),
         "stack": (4194304, UNLIMITED)}
ROWS = {"nofile": "Max open files", "nproc": "Max processes", "core": "Max core file size", "stack": "Max stack size",
        "memlock": "Max locked memory"}
HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _hard(name: str) -> str:
    """Our hard limit of RLIMIT_<name>, as prlimit takes it."""
    hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))[1]
    return "unlimited" if hard == resource.RLIM_INFINITY else str(hard)


def _limits(text: str) -> dict[str, tuple[int, int]]:
    """/proc/PID/limits, the rows of ROWS, as (soft, hard) with UNLIMITED for `unlimited`."""
    found: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        for name, row in ROWS.items():
            if line.startswith(row + " "):
                soft, hard = line[len(row):].split()[:2]
                found[name] = (UNLIMITED if soft == "unlimited" else int(soft),
                               UNLIMITED if hard == "unlimited" else int(hard))
    return found


def _cli(sandbox: Sandbox, limits: dict[str, str], *args: str) -> str:
    """`reconcile ARGS` run with other limits of its own (prlimit --nofile=SOFT:HARD ...)."""
    options = [f"--{name}={value}" for name, value in limits.items()]
    result = sandbox.run("prlimit", *options, "--", sys.executable, "-m", "reconcile", *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _defaults() -> dict[str, tuple[int, int]]:
    """What a container asking nothing gets from a CLI with our hard limits, of the ROWS: the
    defaults (DEFAULTS, the host init's for the others), each lowered to what that CLI may set
    (on a host that lets root raise none, its own hard limit)."""
    ceilings = rlimits.ceilings()
    return {name: (at_most(soft, ceilings.of(name)), at_most(hard, ceilings.of(name)))
            for name, (soft, hard) in rlimits.container_defaults().items() if name in ROWS}


def _seen(sandbox: Sandbox, name: str, cli: dict[str, str]) -> dict[str, dict[str, tuple[int, int]]]:
    """The limits of the container's init, of its program, and of an exec run by a CLI with `cli`."""
    return {"init": _limits(_cli(sandbox, cli, "exec", name, "--", "cat", "/proc/1/limits")),
            "program": _limits(_cli(sandbox, cli, "exec", name, "--", "cat", "/tmp/own")),
            "exec": _limits(_cli(sandbox, cli, "exec", name, "--", "cat", "/proc/self/limits"))}


def test_a_container_and_its_execs_get_the_limits_asked_or_the_defaults_never_the_callers(
        sandbox: Sandbox, rootfs: Path) -> None:
    extra = ("  isolated:\n    command: [\"sh\", \"-c\", \"cat /proc/self/limits > /tmp/own; exec sleep 100000\"]\n"
             f"    rootfs: {rootfs}\n    userns: auto\n    ulimits: {{nofile: {{soft: 1000, hard: 2000}}, nproc: 500, "
             "core: -1, stack: {soft: 4194304, hard: unlimited}}\n")
    path = sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, extra=extra))
    # The CLI that starts them holds other limits than any asked (its hard ones are ours): a soft
    # nofile of 3000, core dumps on (as a shell after `ulimit -c unlimited`).
    core_hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    core = "unlimited" if core_hard == UNLIMITED else str(core_hard)
    # Soft stack and locked memory limits of its own too: no limit the spec leaves out is the
    # starter's (soft ones: this host lets no process raise a hard one, kernel-notes.md).
    _cli(sandbox, {"nofile": f"3000:{HARD_NOFILE}", "core": f"{core}:{core}", "stack": f"1048576:{_hard('STACK')}",
                   "memlock": f"4096:{_hard('MEMLOCK')}"}, "apply", str(path))
    for name in ("db", "isolated"):
        for who, limits in _seen(sandbox, name, {"nofile": f"{HARD_NOFILE}:{HARD_NOFILE}"}).items():
            assert {n: limits[n] for n in ASKED} == ASKED, (name, who)
    expected = _defaults()
    assert expected["nofile"][0] == 1024 and expected["core"][0] == 0  # not the starter's 3000, nor its core
    assert expected["stack"][0] != 1048576 and expected["memlock"][0] != 4096
    # An exec from a CLI whose soft nofile is lower still gets the container's, as the probes do.
    for who, limits in _seen(sandbox, "plain", {"nofile": f"100:{HARD_NOFILE}"}).items():
        assert limits == expected, who


def test_a_change_of_ulimits_recreates_the_container(sandbox: Sandbox, rootfs: Path) -> None:
    path = sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, extra=""))
    sandbox.apply(path)
    before = sandbox.containers()
    assert sandbox.apply(path) == "No changes. The host matches the spec.\n"
    sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, extra="").replace("soft: 1000,", "soft: 1500,"))
    plan = sandbox.apply(path)
    assert "-/+ container lim/db (recreate: ulimits changed)" in plan, plan
    after = sandbox.containers()
    assert after["db"]["pid"] != before["db"]["pid"] and after["plain"]["pid"] == before["plain"]["pid"]
    assert _limits(sandbox.exec_in("db", "cat", "/proc/1/limits"))["nofile"] == (1500, 2000)


def test_a_hard_limit_the_host_cannot_give_is_refused_before_anything_changes(sandbox: Sandbox, rootfs: Path) -> None:
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    path = sandbox.write("stack.yaml", STACK.format(rootfs=rootfs, extra="").replace(
        "nofile: {soft: 1000, hard: 2000}", f"nofile: {{soft: 1000, hard: {nr_open + 1}}}"))
    for verb in ("diff", "apply"):
        result = sandbox.reconcile(verb, str(path))
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"stack.yaml:7:15: containers.db.ulimits.nofile: hard limit {nr_open + 1} is above " in result.stderr
    assert sandbox.netns_names() == [] and sandbox.processes() == []


def test_a_container_restarted_by_the_agent_gets_what_apply_gave_it(sandbox: Sandbox, rootfs: Path) -> None:
    """The agent raises its own soft nofile to its hard one (it watches a namespace and a
    process per container); the container it restarts still gets the default, as from apply."""
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    path = specs / "stack.yaml"
    path.write_text(STACK.format(rootfs=rootfs, extra=""))
    _cli(sandbox, {"nofile": f"3000:{HARD_NOFILE}"}, "apply", str(path))
    applied = {name: _limits(sandbox.exec_in(name, "cat", "/proc/1/limits")) for name in ("db", "plain")}
    agent = Agent(sandbox, specs, "--resync", "60")
    try:
        assert eventually(lambda: agent.saw("agent started"), True)
        pids = {name: int(row["pid"]) for name, row in sandbox.containers().items()}
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)

        def restarted() -> list[bool]:
            rows = sandbox.containers()
            return [rows[name]["state"] == "running" and rows[name]["pid"] != pid for name, pid in pids.items()]

        assert eventually(restarted, [True, True], timeout=30) == [True, True]
        for name, limits in applied.items():
            assert _limits(sandbox.exec_in(name, "cat", "/proc/1/limits")) == limits, name
        assert applied["plain"]["nofile"][0] == 1024
    finally:
        assert agent.stop() == 0


PROBED = """\
name: hc
containers:
  db:
    command: sleep 100000
    rootfs: {rootfs}
    ulimits: {{nofile: {{soft: 1000, hard: 2000}}}}
    healthcheck:
      test: ["CMD-SHELL", "test $(ulimit -Sn) = 1000 && test $(ulimit -Hn) = 2000"]
      interval: 1s
      retries: 2
  web:
    command: sleep 100000
    rootfs: {rootfs}
    depends_on: {{db: {{condition: service_healthy}}}}
"""


def test_a_health_probe_runs_with_the_containers_limits_not_the_probers(sandbox: Sandbox, rootfs: Path) -> None:
    """apply probes db before it starts web, from a CLI holding other limits: healthy only if
    the probe ran with db's own."""
    path = sandbox.write("stack.yaml", PROBED.format(rootfs=rootfs))
    _cli(sandbox, {"nofile": f"3000:{HARD_NOFILE}"}, "apply", str(path))
    rows = sandbox.containers()
    assert rows["web"]["state"] == "running" and rows["db"]["health"]["status"] == "healthy"
