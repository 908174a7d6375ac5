"""Files under `reconcile watch` as people move them about: clashes that resolve the same way
across agent restarts, renames, copy-then-delete, and GitOps layouts that swap the directory
(a flipped symlink, a ConfigMap-style `..data` flip, a directory replaced by `mv`). No running
container is destroyed by any of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.sandbox import Sandbox
from tests.waiting import eventually
from tests.watch_agent import NETWORKS, Agent, has_address, save_atomically, watch_row

WITH_CONTAINER = """\
name: {name}
networks:
  net: {{subnet: {subnet}}}
containers:
  {container}:
    command: sleep 100000
    networks: [net]
"""


@pytest.fixture
def specs(sandbox: Sandbox) -> Path:
    directory = sandbox.workdir / "specs"
    directory.mkdir()
    return directory


def _pid(sandbox: Sandbox, container: str) -> int | None:
    row = sandbox.containers().get(container, {})
    return row.get("pid") if row.get("state") == "running" else None


def _running(sandbox: Sandbox, agent: Agent, *containers: str) -> dict[str, int | None]:
    pids = {c: eventually(lambda c=c: _pid(sandbox, c) is not None, True, timeout=15) and _pid(sandbox, c)
            for c in containers}
    assert all(pids.values()), (pids, [line.get("error") for line in agent.lines if line.get("event") == "error"])
    return pids


def _down(sandbox: Sandbox, *stacks: str) -> None:
    for stack in stacks:
        sandbox.reconcile("down", "--stack", stack, check=True)


def test_a_clash_resolves_the_same_way_after_an_agent_restart(sandbox: Sandbox, specs: Path) -> None:
    a, z = specs / "a.yaml", specs / "z.yaml"
    save_atomically(a, WITH_CONTAINER.format(name="aaa", subnet="10.84.1.0/24", container="x"))
    save_atomically(z, WITH_CONTAINER.format(name="zeta", subnet="10.84.2.0/24", container="z"))
    first = Agent(sandbox, specs, "--debounce", "50")
    try:
        pids = _running(sandbox, first, "x", "z")
        save_atomically(a, WITH_CONTAINER.format(name="zeta", subnet="10.84.3.0/24", container="y"))
        assert eventually(lambda: first.saw("spec invalid", file=str(a)), True)
    finally:
        assert first.stop() == 0
    second = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: second.saw("spec adopted", stack="aaa"), True)
        assert eventually(lambda: (watch_row(sandbox, "zeta") or {}).get("sync"), "Synced") == "Synced"
        assert {c: _pid(sandbox, c) for c in ("x", "z")} == pids and "y" not in sandbox.containers()
    finally:
        assert second.stop() == 0
    assert not second.saw("pruned") and not second.saw("change")
    _down(sandbox, "aaa", "zeta")


def test_a_renamed_file_keeps_its_stack_through_a_typo_and_a_restart(sandbox: Sandbox, specs: Path) -> None:
    one, uno = specs / "one.yaml", specs / "uno.yaml"
    save_atomically(one, WITH_CONTAINER.format(name="one", subnet="10.84.4.0/24", container="c1"))
    first = Agent(sandbox, specs, "--debounce", "50")
    try:
        pids = _running(sandbox, first, "c1")
        assert eventually(lambda: (watch_row(sandbox, "one") or {}).get("last_apply") is not None, True)
        one.rename(uno)
        assert eventually(lambda: first.saw("stack moved", stack="one", file=str(uno)), True)
        assert eventually(lambda: (watch_row(sandbox, "one") or {}).get("source"), str(uno)) == str(uno)
        row = watch_row(sandbox, "one") or {}
        assert row.get("last_apply") is not None, row
    finally:
        assert first.stop() == 0
    assert next(s for s in sandbox.status()["stacks"] if s["name"] == "one")["source"] == str(uno)
    save_atomically(uno, WITH_CONTAINER.format(name="one", subnet="10.84.4.0/33", container="c1"))
    second = Agent(sandbox, specs, "--debounce", "50")
    try:
        assert eventually(lambda: second.saw("spec adopted", stack="one"), True)
        assert eventually(lambda: (watch_row(sandbox, "one") or {}).get("sync"), "Error") == "Error"
        assert _pid(sandbox, "c1") == pids["c1"]
    finally:
        assert second.stop() == 0
    assert not second.saw("pruned")
    _down(sandbox, "one")


def test_a_copy_then_delete_moves_the_stack_without_a_restart(sandbox: Sandbox, specs: Path) -> None:
    old, new = specs / "old.yaml", specs / "new.yaml"
    save_atomically(old, WITH_CONTAINER.format(name="cp", subnet="10.84.5.0/24", container="c4"))
    agent = Agent(sandbox, specs, "--debounce", "50", "--resync", "60")
    try:
        pids = _running(sandbox, agent, "c4")
        assert eventually(lambda: (watch_row(sandbox, "cp") or {}).get("sync"), "Synced") == "Synced"
        settled = len(agent.lines)
        shutil.copyfile(old, new)
        assert eventually(lambda: agent.saw("spec invalid", file=str(new)), True)
        old.unlink()
        assert eventually(lambda: agent.saw("stack moved", stack="cp", file=str(new)), True)
        assert eventually(lambda: ((watch_row(sandbox, "cp") or {}).get("source"),
                                   (watch_row(sandbox, "cp") or {}).get("sync")), (str(new), "Synced")) \
            == (str(new), "Synced")
        assert _pid(sandbox, "c4") == pids["c4"]
    finally:
        assert agent.stop() == 0
    assert not [line for line in agent.lines[settled:] if line.get("event") in ("pruned", "change")]
    _down(sandbox, "cp")


def _flip(link: Path, target: str) -> None:
    """Point a symlink elsewhere atomically, as git-sync and the kubelet do."""
    staged = link.with_name(link.name + ".tmp")
    os.symlink(target, staged)
    os.replace(staged, link)


def test_gitops_layouts_keep_the_watch(sandbox: Sandbox) -> None:
    """Only the file watch can apply these in time: the resync is a minute away."""
    top = sandbox.workdir
    (top / "rev1").mkdir()
    save_atomically(top / "rev1" / "a.yaml", NETWORKS.format(name="flip", subnet="10.84.6.0/24"))
    (top / "current").symlink_to("rev1")
    cm = top / "cm"  # a ConfigMap volume: files are links through `..data` to a timestamped dir
    (cm / "..v1").mkdir(parents=True)
    save_atomically(cm / "..v1" / "b.yaml", NETWORKS.format(name="cm", subnet="10.84.7.0/24"))
    (cm / "..data").symlink_to("..v1")
    (cm / "b.yaml").symlink_to("..data/b.yaml")
    plain = top / "plain"
    plain.mkdir()
    save_atomically(plain / "c.yaml", NETWORKS.format(name="swap", subnet="10.84.8.0/24"))
    agents = [Agent(sandbox, top / d, "--debounce", "50", "--resync", "60", "--no-prune")
              for d in ("current", "cm", "plain")]
    try:
        assert eventually(lambda: all(has_address(sandbox, f"rc-{s}-net", f"10.84.{n}.1/24")
                                      for s, n in (("flip", 6), ("cm", 7), ("swap", 8))), True, timeout=15)
        (top / "rev2").mkdir()
        save_atomically(top / "rev2" / "a.yaml", NETWORKS.format(name="flip", subnet="10.84.16.0/24"))
        _flip(top / "current", "rev2")
        (cm / "..v2").mkdir()
        save_atomically(cm / "..v2" / "b.yaml", NETWORKS.format(name="cm", subnet="10.84.17.0/24"))
        _flip(cm / "..data", "..v2")
        plain.rename(top / "plain.old")
        plain.mkdir()
        save_atomically(plain / "c.yaml", NETWORKS.format(name="swap", subnet="10.84.18.0/24"))
        assert eventually(lambda: [has_address(sandbox, f"rc-{s}-net", f"10.84.{n}.1/24")
                                   for s, n in (("flip", 16), ("cm", 17), ("swap", 18))], [True] * 3, timeout=10) \
            == [True] * 3
        assert agents[0].saw("watch re-armed", target=str(top / "rev2"))
        # the new one is watched
        save_atomically(top / "rev2" / "a.yaml", NETWORKS.format(name="flip", subnet="10.84.26.0/24"))
        save_atomically(plain / "c.yaml", NETWORKS.format(name="swap", subnet="10.84.28.0/24"))
        assert eventually(lambda: [has_address(sandbox, f"rc-{s}-net", f"10.84.{n}.1/24")
                                   for s, n in (("flip", 26), ("swap", 28))], [True] * 2, timeout=10) == [True] * 2
    finally:
        for agent in agents:
            assert agent.stop() == 0
    _down(sandbox, "flip", "cm", "swap")
