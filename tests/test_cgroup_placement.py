"""Where a container's processes live: the whole runtime tree (the waiting shell, crun, the init,
the program) leaves the caller's cgroups in every hierarchy of the host, named ones
(name=systemd) and the unified tree of a hybrid host included, so a session scope or a
oneshot unit that ran `apply` can end without taking the container along. And the cgroup
parent goes with the last stack, unless something not ours is in it.

On the real kernel (v1 hybrid here, v2 in the VM lane), in the sandbox's per-run parent; the
foreign cgroups the caller sits in are per-run too and purged afterwards."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers.cgroup import KIND_CGROUP, CgroupController
from controllers.change import Action, Change
from controllers.errors import ApplyErrors
from kernel import runtime
from kernel.cgroups_v2 import V2Driver
from kernel.oci import Runtime
from state.store import Store
from tests.cgroupfs import DRIVER, V2, hierarchy_roots, limit_file
from tests.sandbox import Sandbox, purge_cgroup
from tests.waiting import eventually

CGROUP_ROOT = Path("/sys/fs/cgroup")
CALLER_HIERARCHIES = DRIVER.roots() if V2 else [CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified"]
"""Where systemd tracks (and, when a scope ends, kills) the processes of a session or a unit: the
unified tree (v2), or name=systemd and the unified tree beside the v1 hierarchies (hybrid)."""

STACK = """\
name: {name}
containers:
  web:
    command: ["sleep", "100000"]
    resources: {{memory: 64Mi}}
"""


@pytest.fixture
def caller() -> Iterator[list[Path]]:
    """A foreign cgroup where systemd tracks a session scope."""
    name = f"rc-test-caller-{uuid.uuid4().hex[:8]}"
    made = [h / name for h in CALLER_HIERARCHIES if h.is_dir()]
    if len(made) != len(CALLER_HIERARCHIES):
        pytest.skip("needs a v2 host, or a hybrid one with name=systemd and unified hierarchies")
    for path in made:
        path.mkdir()
    try:
        yield made
    finally:
        for path in made:
            purge_cgroup(path)


def _cgroups_of(pid: int) -> dict[str, str]:
    """Hierarchy (its controllers, or "" for cgroup2) -> the process's cgroup in it."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}


def _apply_from(sandbox: Sandbox, cgroups: list[Path], stack: Path) -> None:
    joins = " && ".join(f"echo 0 > {path / 'cgroup.procs'}" for path in cgroups)
    result = sandbox.run("sh", "-c", f'{joins} && exec "$@"', "sh", sys.executable, "-m", "reconcile",
                         "apply", str(stack), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_whole_container_leaves_the_callers_cgroups_in_every_hierarchy(
        sandbox: Sandbox, caller: list[Path]) -> None:
    _apply_from(sandbox, caller, sandbox.write("stack.yaml", STACK.format(name="lim")))
    tree = sandbox.processes()
    commands = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in tree}
    assert {"sh", "crun", "init", "sleep"} <= commands  # and the log writer, where there is one
    ours = f"/{sandbox.cgroup_parent}/lim/"
    for pid in tree:
        cgroups = _cgroups_of(pid)
        assert len(cgroups) == len(hierarchy_roots())  # one line per hierarchy, cgroup2 included
        assert {h: c for h, c in cgroups.items() if not c.startswith(ours)} == {}, pid
    for path in caller:
        assert (path / "cgroup.procs").read_text() == ""

    # The scope ends: systemd kills everything left in it. The container keeps running.
    pid = sandbox.containers()["web"]["pid"]
    for path in caller:
        purge_cgroup(path)
    assert sandbox.containers()["web"]["state"] == "running"
    assert sorted(sandbox.processes()) == sorted(tree)
    assert sandbox.containers()["web"]["pid"] == pid

    # The container's cgroups go with it, in every hierarchy.
    result = sandbox.reconcile("down", "--stack", "lim")
    assert result.returncode == 0, result.stdout + result.stderr
    assert eventually(sandbox.processes, []) == []
    assert [str(p) for p in sandbox.cgroup_dirs()] == []


def test_down_removes_the_parent_with_the_last_stack_in_every_hierarchy(sandbox: Sandbox) -> None:
    for name in ("one", "two"):
        assert sandbox.reconcile("apply", str(sandbox.write(f"{name}.yaml", STACK.format(name=name)))).returncode == 0
    assert len(sandbox.cgroup_dirs()) == len(hierarchy_roots())
    assert sandbox.reconcile("down", "--stack", "one").returncode == 0
    assert [sorted(p.name for p in top.iterdir() if p.is_dir()) for top in sandbox.cgroup_dirs()] == \
        [["two"]] * len(hierarchy_roots())
    assert sandbox.reconcile("down", "--stack", "two").returncode == 0
    assert sandbox.cgroup_dirs() == []


def test_a_parent_reconcile_made_goes_with_the_last_stack_after_the_store_was_lost(sandbox: Sandbox) -> None:
    """Its mark, on the parent itself in every hierarchy, tells a run without the store that
    the parent is reconcile's (as the one an admin made is not: the test below)."""
    assert sandbox.reconcile("apply", str(sandbox.write("one.yaml", STACK.format(name="one")))).returncode == 0
    (sandbox.state_dir / "state.db").unlink()
    assert sandbox.reconcile("down", "--stack", "one").returncode == 0
    assert sandbox.cgroup_dirs() == []


def test_a_parent_holding_anything_not_ours_is_kept_everywhere(sandbox: Sandbox) -> None:
    assert sandbox.reconcile("apply", str(sandbox.write("one.yaml", STACK.format(name="one")))).returncode == 0
    foreign = hierarchy_roots()[-1] / sandbox.cgroup_parent / "Foreign_canary"  # not a limiting one on v1
    foreign.mkdir()
    assert sandbox.reconcile("down", "--stack", "one").returncode == 0
    assert [[p.name for p in top.iterdir() if p.is_dir()] for top in sandbox.cgroup_dirs()] == \
        [["Foreign_canary"] if top == foreign.parent else [] for top in sandbox.cgroup_dirs()]
    assert len(sandbox.cgroup_dirs()) == len(hierarchy_roots())


def test_a_parent_that_was_there_before_stays_with_its_limit(sandbox: Sandbox) -> None:
    """Made by an admin (a cap for every container, say): not ours to remove, not even empty."""
    memory = limit_file(sandbox.cgroup_parent, "memory")
    memory.parent.mkdir()
    memory.write_text(str(512 << 20))
    assert sandbox.reconcile("apply", str(sandbox.write("one.yaml", STACK.format(name="one")))).returncode == 0
    assert sandbox.reconcile("down", "--stack", "one").returncode == 0
    assert memory.read_text().strip() == str(512 << 20)
    assert all(not any(p.is_dir() for p in top.iterdir()) for top in sandbox.cgroup_dirs())


def test_a_parent_with_a_process_of_its_own_is_kept(tmp_path: Path) -> None:
    """On files (a v2 tree): the process's pid in cgroup.procs keeps the parent; empty, it goes,
    its last level only."""
    driver = V2Driver(tmp_path)
    (tmp_path / "system/rc").mkdir(parents=True)
    (tmp_path / "system/rc/cgroup.procs").write_text("4242\n")
    driver.remove_parent("system/rc")
    assert (tmp_path / "system/rc").is_dir()
    (tmp_path / "system/rc/cgroup.procs").unlink()
    driver.remove_parent("system/rc")
    driver.remove_parent("system/rc")  # already gone: nothing to do
    assert [p.name for p in tmp_path.rglob("*")] == ["system"]


def test_a_start_that_cannot_join_its_cgroups_fails_with_the_reason(tmp_path: Path) -> None:
    """The runtime never runs outside the cgroups it was given: a cgroup.procs it cannot write
    stops the start with the shell's words."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    missing = tmp_path / "gone" / "cgroup.procs"
    with pytest.raises(runtime.StartError, match=rf"^web: rc-container: 1: cannot create {missing}: "
                                                 r"Directory nonexistent$"):
        with runtime.launching(Runtime(tmp_path / "runtime", hybrid=False), "rc-web", bundle, tmp_path / "log",
                               "web", [str(missing)], runtime.LogLimits(max_bytes=1 << 20, max_files=2)) as launch:
            launch.run({})
    assert not (tmp_path / "runtime").exists()  # crun never ran
    assert runtime.exit_code(tmp_path / "log") == 125  # Docker's code for a container that could not run


def test_a_stack_monitor_that_stays_keeps_its_stacks_cgroups_for_the_next_run(tmp_path: Path) -> None:
    """On files (a v2 tree; a file in a directory stands for what keeps a cgroup busy): a stack's
    monitor goes before the cgroups of its last containers; when it cannot, they stay too, so
    the next run plans their deletion again, and the monitor's with it (nothing reads a monitor
    back on its own). Another stack's removal goes on."""
    tree = tmp_path / "cgroup"
    for level in ("rc/one/a", "rc/one/b", "rc/one/_monitor", "rc/two/c", "rc/two/_monitor"):
        (tree / level).mkdir(parents=True)
    stuck = tree / "rc/one/_monitor/busy"
    stuck.write_text("")
    controller = CgroupController(V2Driver(tree), "rc", Store.open(tmp_path / "state"))
    deletions = [Change(Action.DELETE, KIND_CGROUP, key) for key in ("one/a", "one/b", "two/c")]
    kept = r"^delete cgroup rc/one/_monitor \(the stack's containers' cgroups are kept with it\): "
    with pytest.raises(ApplyErrors, match=kept + r"cannot remove cgroup .*/rc/one/_monitor: Directory not empty$"):
        controller.apply(deletions)
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_dir()) == \
        ["rc", "rc/one", "rc/one/_monitor", "rc/one/a", "rc/one/b"]
    stuck.unlink()
    controller.apply(deletions)
    assert [p.name for p in tree.rglob("*")] == ["rc"]
