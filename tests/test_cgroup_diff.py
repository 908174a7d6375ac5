"""The cgroup diff (pure): what needs creating, changing in place or pruning, and limits the host
cannot enforce reported before anything changes. The driver here is a stand-in for the host's
answers (which controllers exist, how the kernel rounds); the real drivers are tested on the
kernel in test_cgroups_v1.py and on files in test_cgroups_v2_paths.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from controllers.base import Desired, Focus
from controllers.cgroup import CgroupObservation, diff_cgroups
from controllers.change import Action
from kernel.cgroups import V1Driver
from kernel.cgroups_common import Limits
from specs.model import Stack


class HostWithout(V1Driver):
    """A v1 host with the hierarchies named; the kernel's rounding as the real driver does it."""

    def __init__(self, *controllers: str):
        super().__init__({c: Path("/nonexistent") / c for c in controllers})

    def _parent_cpus(self, relpath: str) -> str | None:
        return "0-1"


def _desired(*stacks: Stack) -> Desired:
    return Desired(stacks={s.name: s for s in stacks}, scope=frozenset(s.name for s in stacks))


def _stack(name: str, **resources: object) -> Stack:
    return Stack.model_validate({"name": name, "containers": {"web": {"command": "sleep 1", "resources": resources}}})


def test_new_changed_in_sync_and_pruned() -> None:
    driver = HostWithout("memory", "cpu", "cpuacct", "pids", "cpuset")
    observed = CgroupObservation("rc", {
        "a/web": Limits(memory=99999744, cpus=0.5),  # in sync: 100M in pages
        "b/web": Limits(pids=300),  # drifted
        "b/old": Limits(),  # gone from the spec
        "other/web": Limits(),  # out of scope: left alone
    })
    diff = diff_cgroups(_desired(_stack("a", memory="100M", cpus=0.5), _stack("b", pids=20),
                                 _stack("c", cpuset="0-1")), observed, driver)
    assert not diff.issues
    assert [(c.action, c.key, [(f.path, f.old, f.new) for f in c.fields]) for c in diff.changes] == [
        (Action.UPDATE, "b/web", [("resources.pids", 300, 20)]),
        (Action.CREATE, "c/web", []),  # all the parent's CPUs: no restriction to write
        (Action.DELETE, "b/old", []),
    ]


def test_a_focused_pass_makes_the_whole_diffs_changes_about_its_focus() -> None:
    driver = HostWithout("memory", "cpu", "cpuacct", "pids", "cpuset")
    observed = CgroupObservation("rc", {"b/web": Limits(pids=300), "b/old": Limits()})
    want = _desired(_stack("b", pids=20), _stack("c", cpuset="0-1"))
    whole = diff_cgroups(want, observed, driver).changes
    assert [c.key for c in whole] == ["b/web", "c/web", "b/old"]
    for containers in ([("b", "web")], [("b", "old")], [("c", "web"), ("b", "old")]):
        focus = Focus(frozenset(containers), frozenset())
        only = CgroupObservation("rc", {k: v for k, v in observed.limits.items() if focus.has_container(k)})
        about = [c for c in whole if focus.has_container(c.key)]
        assert diff_cgroups(replace(want, focus=focus), observed, driver).changes == about
        assert diff_cgroups(replace(want, focus=focus), only, driver).changes == about


def test_cpu_shares_changed_dropped_and_the_default_in_sync() -> None:
    driver = HostWithout("memory", "cpu", "cpuacct", "pids", "cpuset")
    observed = CgroupObservation("rc", {"a/web": Limits(cpu_shares=2048), "b/web": Limits(cpu_shares=512),
                                        "c/web": Limits()})
    diff = diff_cgroups(_desired(_stack("a", cpu_shares=512), _stack("b"), _stack("c", cpu_shares=1024)),
                        observed, driver)
    assert [(c.action, c.key, [(f.path, f.old, f.new) for f in c.fields]) for c in diff.changes] == [
        (Action.UPDATE, "a/web", [("resources.cpu_shares", 2048, 512)]),
        (Action.UPDATE, "b/web", [("resources.cpu_shares", 512, None)]),  # dropped: back to the default
    ]


def test_a_limit_the_host_cannot_enforce_is_a_spec_issue() -> None:
    diff = diff_cgroups(_desired(_stack("a", memory="64Mi", cpuset="0")), CgroupObservation("rc", {}),
                        HostWithout("memory", "cpu", "pids"))
    assert not diff.changes
    assert [(i.stack, i.loc, i.message) for i in diff.issues] == [
        ("a", ("containers", "web", "resources"),
         "this host cannot enforce it: no cgroup v1 hierarchy is mounted for cpuset")]
