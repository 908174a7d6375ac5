"""Limits the host cannot meet (a cpuset naming CPUs it lacks, more CPUs of quota than it has)
are spec errors found before anything changes: the pure check, the host's CPUs as the cgroup
driver reads them (on files), and `diff`/`apply` through the CLI on the real host."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.base import Desired
from controllers.cgroup import CgroupObservation, diff_cgroups
from kernel.cgroups_v1 import V1Driver
from kernel.cgroups_v2 import V2Driver
from specs.errors import Issue
from specs.model import Stack
from specs.units import format_cpu_list, parse_cpu_list
from specs.validate import check_host_cpus
from tests.cgroupfs import DRIVER
from tests.sandbox import Sandbox

RESOURCES = ("containers", "web", "resources")


def _stack(**resources: object) -> Stack:
    return Stack.model_validate({"name": "s", "containers": {"web": {"command": "sleep 1", "resources": resources}}})


@pytest.mark.parametrize(("host", "resources", "expected"), [
    ([0, 1], {"cpus": 2, "cpuset": "0-1"}, []),
    ([0, 1], {"cpus": 0.5, "memory": "64Mi"}, []),
    ([0, 1], {"cpuset": "5"}, [(RESOURCES + ("cpuset",), "cpuset '5': this host has CPUs 0-1")]),
    ([0, 1], {"cpuset": "1-2", "cpus": 64}, [(RESOURCES + ("cpuset",), "cpuset '1-2': this host has CPUs 0-1")]),
    ([0], {"cpuset": "1"}, [(RESOURCES + ("cpuset",), "cpuset '1': this host has CPU 0")]),
    ([0, 1], {"cpus": 64}, [(RESOURCES + ("cpus",), "cpus 64: this host has 2 CPUs (0-1)")]),
    ([0, 1, 2, 3, 8], {"cpus": 5.5}, [(RESOURCES + ("cpus",), "cpus 5.5: this host has 5 CPUs (0-3,8)")]),
    ([0, 1], {"cpus": 1.5, "cpuset": "1"}, [(RESOURCES + ("cpus",), "cpus 1.5: the cpuset '1' has 1 CPU")]),
    ([], {"cpuset": "5", "cpus": 64}, []),  # the host's CPUs are not known: no check
])
def test_check_host_cpus(host: list[int], resources: dict[str, object],
                         expected: list[tuple[tuple[str, ...], str]]) -> None:
    assert check_host_cpus([_stack(**resources)], host) == [Issue("s", loc, message) for loc, message in expected]


def test_the_cgroup_diff_reports_them_and_plans_nothing_else_for_them() -> None:
    driver = V1Driver({c: Path("/nonexistent") / c for c in ("memory", "cpu", "cpuacct", "pids", "cpuset")})
    desired = Desired(stacks={"s": _stack(cpuset="5")}, scope=frozenset({"s"}))
    diff = diff_cgroups(desired, CgroupObservation("rc", {}, (0, 1)), driver)
    assert [(i.loc, i.message) for i in diff.issues] == [(RESOURCES + ("cpuset",),
                                                          "cpuset '5': this host has CPUs 0-1")]


def _write(base: Path, tree: dict[str, str]) -> None:
    for name, text in tree.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)


def test_usable_cpus_are_the_parents_cpuset_or_its_nearest_ancestors(tmp_path: Path) -> None:
    _write(tmp_path, {"cpuset.effective_cpus": "0-7\n", "rc/cpuset.effective_cpus": "2-3\n"})
    driver = V1Driver({"cpuset": tmp_path})
    assert driver.usable_cpus("rc") == [2, 3]
    assert driver.usable_cpus("rc/deeper/still") == [2, 3]  # not made yet: it will copy rc's
    assert driver.usable_cpus("other") == list(range(8))


def test_usable_cpus_without_a_cpuset_controller_are_the_online_ones(tmp_path: Path) -> None:
    online = parse_cpu_list(Path("/sys/devices/system/cpu/online").read_text())
    assert V1Driver({"memory": tmp_path}).usable_cpus("rc") == online
    assert V2Driver(tmp_path).usable_cpus("rc") == online  # no cpuset.cpus.effective at the root
    _write(tmp_path, {"cpuset.cpus.effective": "0-2\n"})
    assert V2Driver(tmp_path).usable_cpus("rc") == [0, 1, 2]


STACK = """\
name: lim
containers:
  web:
    command: ["sleep", "100000"]
    resources:
      memory: 64Mi
      {field}: {value}
"""


@pytest.mark.parametrize("field", ["cpuset", "cpus"])
def test_diff_and_apply_refuse_what_the_host_cannot_meet_before_touching_anything(
        sandbox: Sandbox, field: str) -> None:
    host = DRIVER.usable_cpus(sandbox.cgroup_parent)  # the parent's cpuset: the root's, v1 or v2
    beyond = max(host) + 1
    value = f'"{beyond}"' if field == "cpuset" else str(len(host) * 32)
    stack = sandbox.write("stack.yaml", STACK.format(field=field, value=value))
    plural = "s" if len(host) > 1 else ""
    expected = (f"{stack}:7:{9 + len(field)}: containers.web.resources.{field}: "
                + (f"cpuset '{beyond}': this host has CPU{plural} {format_cpu_list(host)}" if field == "cpuset"
                   else f"cpus {len(host) * 32}: this host has {len(host)} CPU{plural} ({format_cpu_list(host)})"))
    for verb in ("diff", "apply"):
        result = sandbox.reconcile(verb, str(stack))
        assert (result.returncode, result.stderr.strip()) == (1, expected), result.stdout
    assert sandbox.cgroup_dirs() == []
    assert sandbox.netns_names() == []
    assert sandbox.our_links() == []
    assert sandbox.processes() == []
