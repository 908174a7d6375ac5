"""cgroup limits end to end through the CLI, on the real kernel (v1 hierarchies on our machines,
the v2 unified tree in the VM lane), under the sandbox's per-run cgroup parent, with a foreign
canary cgroup left untouched. Paths and file names come from the product's driver (tests.cgroupfs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from controllers.container import RUNTIME_DIR
from kernel import procs
from kernel.cgroups_common import FIELD_CONTROLLERS, Usage
from kernel.cgroups_v1 import V1Driver
from specs import names
from tests.cgroupfs import (
    DRIVER,
    cgroup_of,
    directory,
    hierarchy_roots,
    limit_file,
    limit_text,
    limit_text_inside,
)
from tests.sandbox import Sandbox
from tests.waiting import eventually

# The interpreter itself: a venv under /tmp would be hidden by the container's private /tmp.
PY = os.path.realpath(sys.executable)

STACK = """\
name: lim
containers:
  web:
    command: ["sh", "-c", "cat /proc/self/cgroup; for d in /sys/fs/cgroup/memory /sys/fs/cgroup; do
      [ -e $d/cgroup.procs ] && echo view $(stat -c %i $d) && break; done; for h in cpu cpuacct; do
      [ -e /sys/fs/cgroup/$h/cgroup.procs ] && echo view-$h $(stat -c '%d %i' /sys/fs/cgroup/$h); done;
      exec sleep 100000"]
    resources: {{memory: {memory}, cpus: {cpus}, pids: 20}}
"""


def _relpath(sandbox: Sandbox, container: str, stack: str = "lim") -> str:
    return f"{sandbox.cgroup_parent}/{stack}/{container}"


def _usage(sandbox: Sandbox, container: str) -> Usage:
    """The counters as the product reads them (status shows the same)."""
    usage = DRIVER.usage(_relpath(sandbox, container))
    assert usage is not None
    return usage


def _apply(sandbox: Sandbox, path: Path) -> str:
    result = sandbox.reconcile("apply", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def canary() -> Iterator[Path]:
    """A foreign cgroup with a limit of its own: it must stay byte-identical."""
    limit = limit_file(f"rc-canary-{uuid.uuid4().hex[:8]}", "memory")
    limit.parent.mkdir()
    limit.write_text("50331648")
    yield limit
    limit.parent.rmdir()


def test_limits_round_trip_in_place_and_drift(sandbox: Sandbox, canary: Path) -> None:
    stack = sandbox.write("stack.yaml", STACK.format(memory="64Mi", cpus=0.5))
    _apply(sandbox, stack)
    web = _relpath(sandbox, "web")
    assert [limit_text(web, field) for field in ("memory", "cpus", "pids")] == ["67108864", "50000 100000", "20"]
    pid = sandbox.containers()["web"]["pid"]
    # The runtime's cgroup is a child of ours: our limits hold for it, and the runtime places the
    # process there before its first instruction. Inside, a cgroup namespace hides the path.
    assert str(pid) in (directory(web, "memory") / "ctr" / "cgroup.procs").read_text().split()
    assert cgroup_of(Path(f"/proc/{pid}/cgroup").read_text(), "memory") == f"/{web}/ctr"
    logs = sandbox.reconcile("logs", "web").stdout.splitlines()
    assert cgroup_of("\n".join(line for line in logs if not line.startswith("view")), "memory") == "/"
    # ... and shows it at /sys/fs/cgroup/memory (the whole tree on v2): on v1 bound there, not
    # a hierarchy crun mounts afresh (each such mount walks every cgroup of the unified tree).
    assert f"view {(directory(web, 'memory') / 'ctr').stat().st_ino}" in logs
    bundle = sandbox.state_dir / "containers" / "lim" / "web" / "bundle"
    mounts = json.loads((bundle / "config.json").read_text())["mounts"]
    bound = {m["destination"] for m in mounts if m["type"] == "bind"}
    assert ("/sys/fs/cgroup/memory" in bound) == isinstance(DRIVER, V1Driver)
    if isinstance(DRIVER, V1Driver):
        # cpu and cpuacct too show the runtime's cgroup (a fresh mount in the cgroup namespace
        # would show the same device and inode: the bundle tells that none is mounted afresh)
        ctrs = {h: (directory(web, h) / "ctr").stat() for h in ("cpu", "cpuacct")}
        assert {f"view-{h} {ctr.st_dev} {ctr.st_ino}" for h, ctr in ctrs.items()} <= set(logs)
        assert all(m["type"] != "cgroup" for m in mounts)
    assert sandbox.reconcile("diff", str(stack)).returncode == 0
    # The container reads its limits where it sees its cgroup (a JVM, Node or Go sizes itself
    # from them), the runtime's child, which shows the ones set on ours.
    assert [limit_text_inside(partial(sandbox.exec_in, "web", "cat"), field)
            for field in ("memory", "cpus", "pids")] == ["67108864", "50000 100000", "20"]

    # In place: the plan says so, the process survives.
    stack.write_text(STACK.format(memory="128Mi", cpus=0.25))
    plan = sandbox.reconcile("diff", str(stack))
    assert plan.returncode == 2
    assert "~ cgroup lim/web (in place: limits are changed in place)" in plan.stdout
    assert "resources.memory: 67108864 → 134217728" in plan.stdout
    assert "resources.cpus: 0.5 → 0.25" in plan.stdout
    _apply(sandbox, stack)
    assert [limit_text(web, field) for field in ("memory", "cpus")] == ["134217728", "25000 100000"]
    # Shown inside too: the quota went down, which v1 takes only child first.
    assert [limit_text_inside(partial(sandbox.exec_in, "web", "cat"), field)
            for field in ("memory", "cpus")] == ["134217728", "25000 100000"]
    # ... and up again, which v1 takes only parent first.
    stack.write_text(STACK.format(memory="128Mi", cpus=0.75))
    _apply(sandbox, stack)
    assert limit_text_inside(partial(sandbox.exec_in, "web", "cat"), "cpus") == "75000 100000"
    status = sandbox.containers()["web"]
    assert status["pid"] == pid
    assert status["resources"]["limits"] == {"memory": 134217728, "cpus": 0.75, "pids": 20, "cpuset": None,
                                             "cpu_shares": None}
    assert status["resources"]["usage"]["pids"] == 2  # the init and sleep

    # Drift: a value written by hand is shown and put back.
    limit_file(web, "pids").write_text("300")
    drift = sandbox.reconcile("diff", str(stack))
    assert drift.returncode == 2 and "resources.pids: 300 → 20" in drift.stdout
    _apply(sandbox, stack)
    assert limit_text(web, "pids") == "20"
    assert sandbox.reconcile("diff", str(stack)).returncode == 0

    # Removal: the cgroup goes in every hierarchy; the canary stays as it was.
    stack.write_text("name: lim\n")
    _apply(sandbox, stack)
    assert not any(directory(web, controller).exists() for controller in FIELD_CONTROLLERS.values())
    assert canary.read_text() == "50331648\n"


SHARES_STACK = """\
name: lim
containers:
  web:
    command: ["sleep", "100000"]
    resources: {{pids: 20{shares}}}
"""


def test_cpu_shares_applied_changed_dropped_and_repaired_in_place(sandbox: Sandbox) -> None:
    """cpu.shares on v1, on v2 cpu.weight converted from the shares (512 -> 59, 2048 -> 174, the
    default 1024 -> 100), read back as the shares written."""
    stack = sandbox.write("stack.yaml", SHARES_STACK.format(shares=", cpu_shares: 512"))
    _apply(sandbox, stack)
    web = _relpath(sandbox, "web")
    v2 = not isinstance(DRIVER, V1Driver)
    assert limit_text(web, "cpu_shares") == ("59" if v2 else "512")
    assert sandbox.reconcile("diff", str(stack)).returncode == 0
    pid = sandbox.containers()["web"]["pid"]

    stack.write_text(SHARES_STACK.format(shares=", cpu_shares: 2048"))
    plan = sandbox.reconcile("diff", str(stack))
    assert plan.returncode == 2
    assert "~ cgroup lim/web (in place: limits are changed in place)" in plan.stdout
    assert "resources.cpu_shares: 512 → 2048" in plan.stdout
    _apply(sandbox, stack)
    assert limit_text(web, "cpu_shares") == ("174" if v2 else "2048")
    status = sandbox.containers()["web"]
    assert status["pid"] == pid
    assert status["resources"]["limits"]["cpu_shares"] == 2048

    # Drift: a weight written by hand is shown (as the shares it reads back as) and put back.
    limit_file(web, "cpu_shares").write_text("35" if v2 else "256")
    drift = sandbox.reconcile("diff", str(stack))
    assert drift.returncode == 2 and "resources.cpu_shares: 256 → 2048" in drift.stdout
    _apply(sandbox, stack)
    assert limit_text(web, "cpu_shares") == ("174" if v2 else "2048")

    # Dropped from the spec: the kernel's default again, in place.
    stack.write_text(SHARES_STACK.format(shares=""))
    assert "resources.cpu_shares: 2048 → " in sandbox.reconcile("diff", str(stack)).stdout
    _apply(sandbox, stack)
    assert limit_text(web, "cpu_shares") == ("100" if v2 else "1024")
    assert sandbox.containers()["web"]["pid"] == pid
    assert sandbox.reconcile("diff", str(stack)).returncode == 0


def test_memory_limit_oom_kills_and_status_says_so(sandbox: Sandbox) -> None:
    """A worker killed by the OOM killer is counted while the container runs; an init killed by
    it ends the container with 137 (on v1 the counter goes with the runtime's cgroup)."""
    hog = f"{PY} -c 'b = bytearray(200 * 1024 * 1024)'"
    stack = sandbox.write("stack.yaml", f"""\
name: lim
containers:
  worker:
    command: ["sh", "-c", "{hog}; sleep 60"]
    restart: "no"
    resources: {{memory: 48Mi}}
  hog:
    command: ["{PY}", "-c", "import time; b = bytearray(200 * 1024 * 1024); time.sleep(60)"]
    restart: "no"
    resources: {{memory: 48Mi}}
""")
    _apply(sandbox, stack)
    eventually(lambda: sandbox.containers()["worker"]["resources"]["usage"]["oom_kills"] >= 1, True, timeout=15.0)
    status = sandbox.containers()["worker"]
    assert status["state"] == "running"
    assert status["resources"]["usage"]["memory_peak_bytes"] <= 48 * 1024 * 1024
    eventually(lambda: sandbox.containers()["hog"]["state"], "exited", timeout=15.0)
    assert sandbox.containers()["hog"]["exit_code"] == 137


def test_cpu_quota_throttles_a_busy_loop(sandbox: Sandbox) -> None:
    stack = sandbox.write("stack.yaml", """\
name: lim
containers:
  spin:
    command: ["sh", "-c", "while :; do :; done"]
    resources: {cpus: 0.2}
""")
    _apply(sandbox, stack)
    first, start = _usage(sandbox, "spin"), time.monotonic()
    assert first.cpu_usec is not None
    # 0.3 s of CPU: at least 1.5 s of wall time under the quota, longer on a machine too busy
    # to give the loop even that (a fixed sleep saw it get 10 ms in 1.5 s beside two VMs).
    eventually(lambda: (_usage(sandbox, "spin").cpu_usec or 0) - first.cpu_usec >= 300_000, True, timeout=15.0)
    last = _usage(sandbox, "spin")
    assert last.cpu_usec is not None
    share = (last.cpu_usec - first.cpu_usec) / 1e6 / (time.monotonic() - start)
    assert (last.throttled_periods or 0) > 0
    assert share < 0.35  # the kernel's enforcement, loosely: 0.2 of one CPU
    assert sandbox.containers()["spin"]["resources"]["usage"]["throttled_periods"] > 0


def test_pids_limit_stops_a_fork_loop(sandbox: Sandbox) -> None:
    stack = sandbox.write("stack.yaml", """\
name: lim
containers:
  forks:
    command: ["sh", "-c", "for i in $(seq 20); do sleep 30 & done; echo done; wait"]
    resources: {pids: 5}
""")
    _apply(sandbox, stack)
    eventually(lambda: "fork" in sandbox.reconcile("logs", "forks").stdout.lower(), True, timeout=10.0)
    log = sandbox.reconcile("logs", "forks").stdout
    assert "Cannot fork" in log or "Resource temporarily unavailable" in log
    assert (_usage(sandbox, "forks").pids or 0) <= 5


HOLD_40_MIB = "import time; b = bytearray(40 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(600)"
"""A program that touches 40 MiB (every page) and keeps it."""


def test_lowering_memory_below_usage_is_refused_clearly(sandbox: Sandbox) -> None:
    template = f"""\
name: lim
containers:
  holder:
    command: ["{PY}", "-c", "{HOLD_40_MIB}"]
    resources: {{memory: {{memory}}}}
"""
    stack = sandbox.write("stack.yaml", template.replace("{memory}", "128Mi"))
    _apply(sandbox, stack)
    assert eventually(lambda: (_usage(sandbox, "holder").memory_bytes or 0) >= 40 << 20, True)  # touched
    pid = sandbox.containers()["holder"]["pid"]
    stack.write_text(template.replace("{memory}", "8Mi"))
    result = sandbox.reconcile("apply", str(stack))
    assert result.returncode == 1
    assert "memory 8388608 is below the current usage" in result.stderr
    assert "Traceback" not in result.stderr
    assert limit_text(_relpath(sandbox, "holder"), "memory") == "134217728"
    assert sandbox.containers()["holder"]["pid"] == pid


def _runtime_lost(sandbox: Sandbox, container: str, stack: str = "lim") -> None:
    """The runtime of a running container killed, and its state gone with it (a lost state dir):
    nothing is left to clean up after the container's processes but us."""
    container_id = names.runtime_id(stack, container)
    for pid in sandbox.processes():
        argv = _cmdline(pid)
        if argv[:1] == ["crun"] and container_id in argv:
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(sandbox.state_dir / RUNTIME_DIR / container_id)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


@pytest.mark.parametrize("left_in", ["stack monitor", "a field host's container monitor", "runtime's child"])
def test_down_kills_what_a_crash_left_in_a_cgroup_and_removes_it_everywhere(sandbox: Sandbox, left_in: str) -> None:
    """A process left in the stack's monitor cgroup (a run killed while starting a container:
    the shell that waits on the runtime), in a container's own monitor (where versions before
    one monitor per stack put that shell: still on hosts in the field), or in the runtime's
    child cgroup of the container's with the runtime and its state gone (no `crun delete` to
    kill it), keeps the cgroup busy: `down` kills it, then removes the cgroups and the stack's
    level in every hierarchy. All are leaves on v1 and v2 alike (on v2 the container's own
    cgroup holds no process)."""
    stack = sandbox.write("stack.yaml", STACK.format(memory="64Mi", cpus=0.5))
    _apply(sandbox, stack)
    web = _relpath(sandbox, "web")
    cgroup = {"stack monitor": names.stack_monitor_relpath(sandbox.cgroup_parent, "lim"),
              "a field host's container monitor": names.monitor_relpath(web),
              "runtime's child": f"{web}/{names.RUNTIME_CGROUP}"}[left_in]
    if left_in == "a field host's container monitor":
        for root in hierarchy_roots():  # as those versions made it: everywhere
            (root / cgroup).mkdir()
    stray = sandbox.spawn("sleep", "600")
    try:
        eventually(lambda: (Path(f"/proc/{stray.pid}/comm").read_text().strip()), "sleep")
        (directory(cgroup, "memory") / "cgroup.procs").write_text(str(stray.pid))
        if left_in == "runtime's child":
            _runtime_lost(sandbox, "web")
        result = sandbox.reconcile("down", str(stack))
        assert result.returncode == 0, result.stdout + result.stderr
        assert stray.wait(timeout=10) == -9
    finally:
        stray.kill()
    assert [root for root in hierarchy_roots() if (root / web).parent.exists()] == []


TWO = """\
name: lim
containers:
  web: {command: ["sleep", "100000"]}
  api: {command: ["sleep", "100000"]}
"""


def _sessions_of(monitor: str, container: str) -> set[int | None]:
    """The sessions of a container's runtime processes in the stack's monitor (its waiting shell's)."""
    pids = [int(p) for p in (directory(monitor, "memory") / "cgroup.procs").read_text().split()]
    return {procs.session_of(pid) for pid in pids if procs.last_argument(pid) == names.runtime_id("lim", container)}


def test_a_removed_container_takes_its_leftovers_from_the_stack_monitor_and_nothing_else(sandbox: Sandbox) -> None:
    """Removing one container of a stack keeps the stack's monitor and the other container's
    runtime processes in it (waiting shell, crun, log writer); what the removed one's start left
    there (a hung runtime: a session with a process whose command ends with its runtime id, and
    the session's other processes) is killed."""
    stack = sandbox.write("stack.yaml", TWO)
    _apply(sandbox, stack)
    monitor = names.stack_monitor_relpath(sandbox.cgroup_parent, "lim")
    procs_file = directory(monitor, "memory") / "cgroup.procs"
    web_sessions = _sessions_of(monitor, "web")
    assert len(web_sessions) == 1 and None not in web_sessions
    web_runtime = [int(p) for p in procs_file.read_text().split() if procs.session_of(int(p)) in web_sessions]
    assert len(web_runtime) >= 2  # the waiting shell and the log writer at least
    stray = subprocess.Popen(["sh", "-c", "read go; sleep 600 & wait", "rc-container", names.runtime_id("lim", "api")],
                             stdin=subprocess.PIPE, start_new_session=True, text=True)
    try:
        procs_file.write_text(str(stray.pid))
        assert stray.stdin is not None
        stray.stdin.write("go\n")
        stray.stdin.flush()
        children = Path(f"/proc/{stray.pid}/task/{stray.pid}/children")
        eventually(lambda: len(children.read_text().split()), 1)
        child = int(children.read_text())
        stack.write_text(TWO.replace('  api: {command: ["sleep", "100000"]}\n', ""))
        _apply(sandbox, stack)
        assert stray.wait(timeout=10) == -9
        eventually(lambda: procs.session_of(child), None)
    finally:
        stray.kill()
    assert all(procs.session_of(pid) in web_sessions for pid in web_runtime)  # untouched
    assert sandbox.containers()["web"]["state"] == "running"
    assert procs_file.exists() and not (procs_file.parent.parent / "api").exists()


def test_one_apply_that_removes_a_stacks_only_container_and_starts_another_keeps_a_monitor(
        sandbox: Sandbox) -> None:
    """The plan deletes `api`'s cgroups (the stack's last container's: its monitor goes with
    them) and starts `db` (which makes the monitor again): `db` runs with its runtime in the
    stack's monitor, `api` has left nothing, and a second apply changes nothing."""
    stack = sandbox.write("stack.yaml", TWO.replace('  web: {command: ["sleep", "100000"]}\n', ""))
    _apply(sandbox, stack)
    monitor = names.stack_monitor_relpath(sandbox.cgroup_parent, "lim")
    before = directory(monitor, "memory").stat().st_ino
    stack.write_text(TWO.replace('  web: {command: ["sleep", "100000"]}\n', "").replace("api:", "db:"))
    _apply(sandbox, stack)
    assert directory(monitor, "memory").stat().st_ino != before  # removed with `api`, made again for `db`
    assert {name: row["state"] for name, row in sandbox.containers().items()} == {"db": "running"}
    assert _sessions_of(monitor, "db") and None not in _sessions_of(monitor, "db")
    assert not directory(_relpath(sandbox, "api"), "memory").exists()
    assert "No changes" in _apply(sandbox, stack)
