"""cgroup drivers without a kernel: mountinfo parsing and detection, the v1 and v2 file formats
normalised to Limits, write order and rollback, and the path logic of create, remove and
owned, all on a host described by files in a temporary directory."""

from __future__ import annotations

import errno
from pathlib import Path, PurePosixPath

import pytest

import kernel.cgroups_common as common
import kernel.cgroups_v2 as cgroups_v2
from kernel.cgroups import CgroupError, Limits, Usage, detect, parse_mountinfo, v1_hierarchies, v2_mount
from kernel.cgroups_common import PAGE_SIZE
from kernel.cgroups_v1 import V1Driver
from kernel.cgroups_v2 import V2Driver

HYBRID_SEPARATE = """\
22 27 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

HYBRID_COMOUNTED = """\
25 18 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
33 25 0:31 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpuset
"""

PURE_V2 = """\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""  # noqa: E501 - a mountinfo line, verbatim

# Seen from the host: a container's bind mount of a memory subtree is listed before our own.
NESTED_ON_HOST = """\
90 88 0:32 /docker/0a1b /var/lib/docker/overlay2/f00/merged/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""

# Seen inside a v1 container without a cgroup namespace: only its subtree is mounted.
INSIDE_CONTAINER = """\
1200 1190 0:32 /docker/0a1b /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,memory
1201 1190 0:36 /docker/0a1b /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime master:19 - cgroup cgroup rw,pids
"""

UNIFIED = Path("sys/fs/cgroup")
V2_ALL = "cpuset cpu io memory hugetlb pids rdma misc"


def files(base: Path, tree: dict[str, str]) -> None:
    """Write each relative path of `tree` under `base` with its text, making directories."""
    for name, text in tree.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)


def text(path: Path) -> str:
    return path.read_text()


# --- mountinfo and detection --------------------------------------------------------------------


@pytest.mark.parametrize(("mountinfo", "expected"), [
    (HYBRID_SEPARATE, {c: f"/sys/fs/cgroup/{c}" for c in ("cpu", "cpuacct", "cpuset", "memory", "pids")}),
    (HYBRID_COMOUNTED, {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                        "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids",
                        "cpuset": "/sys/fs/cgroup/cpuset"}),
    (PURE_V2, {}),
    (NESTED_ON_HOST, {"memory": "/sys/fs/cgroup/memory"}),
    (INSIDE_CONTAINER, {"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}),
])
def test_v1_hierarchies(mountinfo: str, expected: dict[str, str]) -> None:
    found = v1_hierarchies(parse_mountinfo(mountinfo))
    assert {name: str(path) for name, path in found.items()} == expected


@pytest.mark.parametrize(("mountinfo", "expected"), [
    (HYBRID_SEPARATE, "/sys/fs/cgroup/unified"),
    (PURE_V2, "/sys/fs/cgroup"),
    (INSIDE_CONTAINER, None),
    ("50 35 0:30 / /run/elsewhere rw - cgroup2 cgroup2 rw\n", None),
])
def test_v2_mount_only_at_the_usual_places(mountinfo: str, expected: str | None) -> None:
    assert v2_mount(parse_mountinfo(mountinfo)) == (None if expected is None else PurePosixPath(expected))


def test_mountinfo_unescapes_paths_and_keeps_the_hierarchy_root() -> None:
    [mount] = parse_mountinfo(r"40 31 0:37 /a\040b /mnt/my\040cgroups rw shared:1 - cgroup cgroup rw,pids" "\n")
    assert (mount.fstype, mount.root, str(mount.mount_point), mount.options) == (
        "cgroup", "/a b", "/mnt/my cgroups", frozenset({"rw", "pids"}))


def test_detect_hybrid_is_v1_rooted_at_the_mount_points(tmp_path: Path) -> None:
    files(tmp_path / UNIFIED / "unified", {"cgroup.controllers": "hugetlb\n"})
    driver = detect(HYBRID_COMOUNTED, root=tmp_path, proc_cgroup="")
    assert isinstance(driver, V1Driver)
    comounted = tmp_path / UNIFIED / "cpu,cpuacct"
    assert driver.hierarchies["cpu"] == driver.hierarchies["cpuacct"] == comounted
    assert driver.roots() == [comounted] + [tmp_path / UNIFIED / c for c in ("memory", "pids", "cpuset")]


def _proc_cgroup(*controllers: str) -> str:
    """/proc/self/cgroup of a process in these v1 hierarchies (and the unified tree)."""
    return "".join(f"{len(controllers) - i}:{c}:/user.slice\n" for i, c in enumerate(controllers)) + "0::/user.slice\n"


SEPARATE_CGROUPS = _proc_cgroup("name=systemd", "pids", "devices", "memory", "cpuset", "cpuacct", "cpu")
COMOUNTED_CGROUPS = _proc_cgroup("name=systemd", "cpu,cpuacct", "memory", "pids", "cpuset")
MEMORY_ELSEWHERE = HYBRID_COMOUNTED.replace("/sys/fs/cgroup/memory rw", "/sys/fs/cgroup/mem rw")
PIDS_READ_ONLY = HYBRID_COMOUNTED.replace("/sys/fs/cgroup/pids rw", "/sys/fs/cgroup/pids ro")
PIDS_READ_ONLY_ON_TOP = HYBRID_COMOUNTED + "34 25 0:30 / /sys/fs/cgroup/pids ro,relatime - cgroup cgroup rw,pids\n"
NET_COMOUNTED = HYBRID_COMOUNTED + ("34 25 0:32 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup "
                                    "rw,net_cls,net_prio\n")


def _same(*names: str) -> dict[str, str]:
    return {name: name for name in names}


V1_MEMORY_IN_CGROUP2 = PURE_V2 + "36 35 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"


@pytest.mark.parametrize(("mountinfo", "proc_cgroup", "inside"), [
    (HYBRID_SEPARATE, SEPARATE_CGROUPS, _same("cpuset", "memory", "devices", "pids", "systemd", "cpu", "cpuacct")),
    (HYBRID_COMOUNTED, _proc_cgroup("name=systemd", "cpuacct,cpu", "memory", "pids", "cpuset"),
     {**_same("systemd", "cpu,cpuacct", "memory", "pids", "cpuset"), "cpu": "cpu,cpuacct", "cpuacct": "cpu,cpuacct"}),
    (NET_COMOUNTED, COMOUNTED_CGROUPS + "9:net_prio,net_cls:/\n",
     {**_same("systemd", "cpu,cpuacct", "memory", "pids", "cpuset", "net_cls,net_prio"), "cpu": "cpu,cpuacct",
      "cpuacct": "cpu,cpuacct", "net_cls": "net_cls,net_prio", "net_prio": "net_cls,net_prio"}),
    # crun mounts them all where one is at another name, read-only, or not mounted
    (MEMORY_ELSEWHERE, COMOUNTED_CGROUPS, {}),
    (PIDS_READ_ONLY, COMOUNTED_CGROUPS, {}),
    (PIDS_READ_ONLY_ON_TOP, COMOUNTED_CGROUPS, {}),
    (HYBRID_COMOUNTED, COMOUNTED_CGROUPS + "9:hugetlb:/\n", {}),
    (HYBRID_SEPARATE, _proc_cgroup("pids"), _same("pids")),  # crun makes the container's cgroup where it is
    (HYBRID_SEPARATE.replace("rw,pids", "rw,rdma"), _proc_cgroup("pids"), {}),  # another hierarchy mounted there
    (V1_MEMORY_IN_CGROUP2, _proc_cgroup("memory"), {}),  # crun shows the cgroup2 tree alone
])
def test_a_v1_container_sees_every_hierarchy_bound_where_crun_would_mount_it_or_none(
        tmp_path: Path, mountinfo: str, proc_cgroup: str, inside: dict[str, str]) -> None:
    files(tmp_path / UNIFIED / "unified", {"cgroup.controllers": "hugetlb\n"})
    views = detect(mountinfo, root=tmp_path, proc_cgroup=proc_cgroup).views("/reconcile/s/c/ctr")
    assert views == {f"/{UNIFIED}/{name}": f"{tmp_path / UNIFIED / host}/reconcile/s/c/ctr"
                     for name, host in inside.items()}


def test_detect_pure_v2(tmp_path: Path) -> None:
    files(tmp_path / UNIFIED, {"cgroup.controllers": V2_ALL + "\n"})
    driver = detect(PURE_V2, root=tmp_path, proc_cgroup="")
    assert isinstance(driver, V2Driver)
    assert driver.roots() == [tmp_path / UNIFIED]
    assert driver.views("/reconcile/s/c/ctr") == {}  # crun's one cgroup2 mount walks nothing


@pytest.mark.parametrize("controllers", ["cpuset cpu io memory", "hugetlb", ""])
def test_detect_falls_back_to_v1_when_the_unified_tree_lacks_a_controller(tmp_path: Path, controllers: str) -> None:
    files(tmp_path / UNIFIED, {"cgroup.controllers": controllers + "\n"})
    driver = detect(PURE_V2, root=tmp_path, proc_cgroup="")
    assert isinstance(driver, V1Driver)
    assert driver.missing(Limits(memory=PAGE_SIZE, cpus=1, pids=1, cpuset="0")) == ["memory", "cpu", "pids", "cpuset"]


@pytest.mark.parametrize(("mountinfo", "unified", "controllers", "driver", "tmpfs"), [
    (HYBRID_SEPARATE, UNIFIED / "unified", "", V1Driver, True),
    ("".join(line for line in HYBRID_SEPARATE.splitlines(keepends=True) if "memory" not in line),
     UNIFIED / "unified", V2_ALL, V2Driver, True),  # no v1 memory: our v2 driver, crun's v1 tmpfs
    (PURE_V2, UNIFIED, V2_ALL, V2Driver, False),
    # a v1 memory hierarchy inside: our v1 driver, crun's one cgroup2 mount
    (V1_MEMORY_IN_CGROUP2, UNIFIED, V2_ALL, V1Driver, False),
])
def test_whether_the_runtime_makes_a_cgroup_tmpfs_is_the_hosts_file_system_there(
        tmp_path: Path, mountinfo: str, unified: Path, controllers: str, driver: type, tmpfs: bool) -> None:
    """crun looks at the type of the host's /sys/fs/cgroup, not at which of our drivers fits."""
    files(tmp_path / unified, {"cgroup.controllers": controllers + "\n"})
    detected = detect(mountinfo, root=tmp_path, proc_cgroup="")
    assert (type(detected), detected.runtime_cgroup_tmpfs) == (driver, tmpfs)


def test_detect_prefers_v1_memory_even_when_unified_offers_it(tmp_path: Path) -> None:
    files(tmp_path / UNIFIED / "unified", {"cgroup.controllers": V2_ALL + "\n"})
    assert isinstance(detect(HYBRID_SEPARATE, root=tmp_path, proc_cgroup=""), V1Driver)


# --- v2 -----------------------------------------------------------------------------------------


@pytest.fixture
def v2(tmp_path: Path) -> V2Driver:
    files(tmp_path, {"cgroup.controllers": V2_ALL + "\n", "cgroup.subtree_control": "\n",
                     "cpuset.cpus.effective": "0-3\n"})
    return V2Driver(tmp_path)


def v2_cgroup(root: Path, relpath: str, values: dict[str, str] | None = None) -> Path:
    """A leaf as the kernel shows it, with the files of enabled controllers."""
    defaults = {"memory.max": "max", "memory.swap.max": "max", "cpu.max": "max 100000", "cpu.weight": "100",
                "pids.max": "max", "cpuset.cpus": "", "cgroup.procs": ""}
    files(root / relpath, {name: value + "\n" for name, value in {**defaults, **(values or {})}.items()})
    return root / relpath


@pytest.mark.parametrize(("values", "expected"), [
    ({}, Limits()),
    ({"memory.max": "67108864", "cpu.max": "20000 100000", "pids.max": "100", "cpuset.cpus": "0-1"},
     Limits(memory=67108864, cpus=0.2, pids=100, cpuset="0-1")),
    ({"cpu.max": "50000 1000000"}, Limits(cpus=0.05)),  # a foreign period still reads in cores
    ({"cpu.max": "33333 100000"}, Limits(cpus=0.33333)),
    ({"cpuset.cpus": "0-3"}, Limits()),  # all of the parent's CPUs: no restriction
    ({"cpu.weight": "59"}, Limits(cpu_shares=512)),  # the weight of 512 shares and of a dozen more
    ({"cpu.weight": "58"}, Limits(cpu_shares=504)),  # 500's, divisible by the highest power of two
])
def test_v2_read_normalises_to_the_spec_shape(v2: V2Driver, values: dict[str, str], expected: Limits) -> None:
    v2_cgroup(v2.root, "s", values)
    assert v2.read("s") == expected


def test_v2_read_of_a_missing_cgroup_is_none(v2: V2Driver) -> None:
    assert v2.read("nothing/here") is None
    assert v2.usage("nothing/here") is None


def test_v2_usage_from_the_kernel_files(v2: V2Driver) -> None:
    v2_cgroup(v2.root, "s", {
        "memory.current": "12582912", "pids.current": "3",
        "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0",
        "cpu.stat": "usage_usec 3500\nuser_usec 3000\nsystem_usec 500\nnr_periods 40\nnr_throttled 12\n"
                    "throttled_usec 90000\nnr_bursts 0\nburst_usec 0"})
    # memory.peak is absent before Linux 5.19
    assert v2.usage("s") == Usage(memory_bytes=12582912, memory_peak_bytes=None, cpu_usec=3500,
                                  throttled_periods=12, throttled_usec=90000, pids=3, oom_kills=1)


@pytest.mark.parametrize(("limits", "expected"), [
    (Limits(memory=67108864, cpus=0.5, pids=100, cpuset="1", cpu_shares=2048),
     {"memory.max": "67108864", "memory.swap.max": "0", "cpu.max": "50000 100000", "pids.max": "100",
      "cpuset.cpus": "1", "cpu.weight": "174"}),
    # A cpuset once set is not emptied (the kernel refuses it with processes in the cgroup: ENOSPC):
    # all the parent's CPUs, which read back as no restriction. The weight goes back to its default.
    (Limits(), {"memory.max": "max", "memory.swap.max": "max", "cpu.max": "max 100000", "pids.max": "max",
                "cpuset.cpus": "0-3", "cpu.weight": "100"}),
])
def test_v2_write(v2: V2Driver, limits: Limits, expected: dict[str, str]) -> None:
    leaf = v2_cgroup(v2.root, "s", {"memory.max": "1", "memory.swap.max": "1", "cpu.max": "1000 100000",
                                    "pids.max": "1", "cpuset.cpus": "0", "cpu.weight": "1"})
    v2.write("s", limits)
    assert {name: text(leaf / name) for name in expected} == {name: v + "\n" for name, v in expected.items()}
    assert v2.read("s") == limits


@pytest.mark.parametrize(("shares", "weight"), [
    (1, 1), (2, 1), (3, 2), (512, 59), (1000, 99), (1024, 100), (2048, 174), (262143, 10000), (262144, 10000)])
def test_v2_weight_of_shares_as_runc_and_crun_convert_them(shares: int, weight: int) -> None:
    """The quadratic of runc >= 1.3 and crun >= 1.23: the default shares are the default weight."""
    assert cgroups_v2.weight_of(shares) == weight


def test_v2_every_weight_reads_back_as_shares_that_convert_to_it() -> None:
    """A weight written by hand (drift) reads as shares of that weight: never as those of another
    weight, which would hide the drift or show one that is not there."""
    reached = {cgroups_v2.weight_of(shares) for shares in range(2, 262145)}
    assert reached == set(range(1, 10001))
    assert all(cgroups_v2.weight_of(cgroups_v2.shares_of(weight)) == weight for weight in reached)
    assert [cgroups_v2.shares_of(cgroups_v2.weight_of(1 << bits)) for bits in range(1, 19)] == \
        [1 << bits for bits in range(1, 19)]  # the usual powers of two read back as written


def test_v2_no_cpuset_leaves_an_empty_one_following_the_parent(v2: V2Driver) -> None:
    leaf = v2_cgroup(v2.root, "s")
    v2.write("s", Limits(pids=5))
    assert text(leaf / "cpuset.cpus") == "\n"


@pytest.mark.parametrize(("reclaimed", "refused"), [(True, False), (False, True)])
def test_v2_memory_below_usage_is_reclaimed_or_refused_before_writing(
        v2: V2Driver, monkeypatch: pytest.MonkeyPatch, reclaimed: bool, refused: bool) -> None:
    """v2 takes a memory.max below the usage and OOM-kills; v1 refuses when reclaim cannot free
    enough. The driver asks memory.reclaim for the difference and refuses as v1 does."""
    leaf = v2_cgroup(v2.root, "s", {"memory.max": "67108864", "memory.current": "41943040"})
    real_write = common.write_text
    requests: list[str] = []

    def reclaim(path: Path, value: str) -> None:
        if path.name != "memory.reclaim":
            return real_write(path, value)
        requests.append(value)
        if not reclaimed:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        real_write(leaf / "memory.current", "8000000")

    monkeypatch.setattr(common, "write_text", reclaim)
    monkeypatch.setattr(cgroups_v2, "write_text", reclaim)
    if refused:
        with pytest.raises(CgroupError, match=r"^memory 8388608 is below the current usage 41943040 of s; "
                                              r"the kernel could not reclaim it \(v2 would OOM-kill instead\)$"):
            v2.write("s", Limits(memory=8 << 20))
    else:
        v2.write("s", Limits(memory=8 << 20))
    assert requests == [str(41943040 - (8 << 20))]
    assert text(leaf / "memory.max") == ("67108864\n" if refused else "8388608\n")


def test_v2_write_puts_back_what_it_changed_when_the_kernel_refuses(
        v2: V2Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    leaf = v2_cgroup(v2.root, "s", {"memory.max": "67108864"})
    before = {path.name: text(path) for path in leaf.iterdir()}
    real_write = common.write_text

    def refuse_pids(path: Path, value: str) -> None:
        if path.name == "pids.max":
            raise OSError(errno.EINVAL, "Invalid argument")
        real_write(path, value)

    monkeypatch.setattr(common, "write_text", refuse_pids)
    refused = r"^pids 5 of s: the kernel refused '5' in pids.max \(EINVAL: Invalid argument\)$"
    with pytest.raises(CgroupError, match=refused):
        v2.write("s", Limits(memory=33554432, cpus=1, pids=5, cpuset="1"))
    assert {path.name: text(path) for path in leaf.iterdir()} == before


def test_v2_write_refuses_limits_the_host_cannot_enforce(tmp_path: Path) -> None:
    files(tmp_path, {"cgroup.controllers": "cpu memory pids\n"})
    driver = V2Driver(tmp_path)
    assert driver.missing(Limits(cpus=1, cpuset="0")) == ["cpuset"]
    assert driver.missing(Limits()) == []
    with pytest.raises(CgroupError, match=r"^cannot limit s: the cgroup2 root does not offer cpuset "
                                          r"\(see its cgroup.controllers\)$"):
        driver.write("s", Limits(cpuset="0"))


def test_v2_create_enables_controllers_from_the_root_down_but_not_in_the_leaf(v2: V2Driver) -> None:
    files(v2.root / "reconcile", {"cgroup.controllers": "cpu memory pids\n", "cgroup.subtree_control": "memory\n"})
    procs = v2.create("reconcile/stack/web")
    assert procs == [str(v2.root / "reconcile/stack/web/cgroup.procs")]
    assert text(v2.root / "cgroup.subtree_control") == "+memory +cpu +pids +cpuset\n"
    assert text(v2.root / "reconcile/cgroup.subtree_control") == "+cpu +pids\n"  # only what is missing
    assert not (v2.root / "reconcile/stack/web/cgroup.subtree_control").exists()


# --- v1 -----------------------------------------------------------------------------------------


@pytest.fixture
def v1(tmp_path: Path) -> V1Driver:
    """A hybrid host with cpu,cpuacct co-mounted."""
    files(tmp_path / UNIFIED / "unified", {"cgroup.controllers": "hugetlb\n"})
    files(tmp_path / UNIFIED, {"cpuset/cpuset.cpus": "0-3\n", "cpuset/cpuset.mems": "0\n",
                               "cpuset/cpuset.effective_cpus": "0-3\n", "memory/cgroup.procs": "",
                               "cpu,cpuacct/cgroup.procs": "", "pids/cgroup.procs": ""})
    driver = detect(HYBRID_COMOUNTED, root=tmp_path, proc_cgroup="")
    assert isinstance(driver, V1Driver)
    return driver


def v1_cgroup(driver: V1Driver, relpath: str, values: dict[str, str] | None = None) -> None:
    """A cgroup in every hierarchy; each file goes to the hierarchy its name starts with."""
    defaults = {"memory.limit_in_bytes": "9223372036854771712", "memory.memsw.limit_in_bytes": "9223372036854771712",
                "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000", "cpu.shares": "1024", "pids.max": "max",
                "cpuset.cpus": "0-3"}
    for name, value in {**defaults, **(values or {})}.items():
        files(driver.hierarchies[name.split(".")[0]] / relpath, {name: value + "\n"})


@pytest.mark.parametrize(("values", "expected"), [
    ({}, Limits()),
    ({"memory.limit_in_bytes": "67108864", "cpu.cfs_quota_us": "50000", "pids.max": "100", "cpuset.cpus": "0"},
     Limits(memory=67108864, cpus=0.5, pids=100, cpuset="0")),
    ({"memory.limit_in_bytes": "9223372036854710272"}, Limits()),  # "unlimited" with 64 KiB pages
    ({"cpu.shares": "512"}, Limits(cpu_shares=512)),
])
def test_v1_read_normalises_to_the_spec_shape(v1: V1Driver, values: dict[str, str], expected: Limits) -> None:
    v1_cgroup(v1, "s", values)
    assert v1.read("s") == expected


def test_v1_read_is_none_when_a_hierarchy_lacks_the_cgroup(v1: V1Driver) -> None:
    v1_cgroup(v1, "s")
    (v1.hierarchies["pids"] / "s/pids.max").unlink()
    (v1.hierarchies["pids"] / "s").rmdir()
    assert v1.read("s") is None


def test_v1_create_in_each_hierarchy_once_and_fills_every_new_cpuset_level(v1: V1Driver) -> None:
    # Levels left by an interrupted run: the kernel made their files empty.
    files(v1.hierarchies["cpuset"], {f"{level}/{name}": "\n" for level in ("rc", "rc/s", "rc/s/web")
                                     for name in ("cpuset.cpus", "cpuset.mems")})
    procs = v1.create("rc/s/web")
    assert procs == [str(root / "rc/s/web/cgroup.procs") for root in v1.roots()]
    assert len(procs) == 4  # cpu and cpuacct share one directory
    for level in ("rc", "rc/s", "rc/s/web"):
        assert (text(v1.hierarchies["cpuset"] / level / "cpuset.cpus"),
                text(v1.hierarchies["cpuset"] / level / "cpuset.mems")) == ("0-3\n", "0\n")
    assert v1.create("rc/s/web") == procs


@pytest.mark.parametrize(("old", "new", "order"), [
    ("9223372036854771712", 67108864, ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]),  # lowering
    ("67108864", 134217728, ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]),  # raising
    ("67108864", None, ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]),  # to unlimited
])
def test_v1_memory_and_swap_are_written_in_an_order_the_kernel_accepts(
        v1: V1Driver, monkeypatch: pytest.MonkeyPatch, old: str, new: int | None, order: list[str]) -> None:
    v1_cgroup(v1, "s", {"memory.limit_in_bytes": old, "memory.memsw.limit_in_bytes": old})
    written: list[str] = []
    real_write = common.write_text

    def recording(path: Path, value: str) -> None:
        written.append(path.name)
        real_write(path, value)

    monkeypatch.setattr(common, "write_text", recording)
    v1.write("s", Limits(memory=new, cpus=0.25, pids=7))
    assert written == order + ["cpu.cfs_quota_us", "pids.max"]  # cpuset and the period were already right
    assert text(v1.hierarchies["memory"] / "s/memory.limit_in_bytes") == f"{new or -1}\n"


def test_v1_cpu_shares_are_written_and_put_back_to_the_default(v1: V1Driver) -> None:
    v1_cgroup(v1, "s")
    for limits, written in ((Limits(cpu_shares=512), "512"), (Limits(), "1024")):
        v1.write("s", limits)
        assert text(v1.hierarchies["cpu"] / "s/cpu.shares") == written + "\n"
        read = v1.read("s")
        assert read is not None and read.cpu_shares == limits.cpu_shares


def test_v1_cpuset_unset_takes_the_parents_cpus(v1: V1Driver) -> None:
    v1_cgroup(v1, "s", {"cpuset.cpus": "1"})
    v1.write("s", Limits())
    assert text(v1.hierarchies["cpuset"] / "s/cpuset.cpus") == "0-3\n"
    assert text(v1.hierarchies["memory"] / "s/memory.limit_in_bytes") == "-1\n"


# --- shared path logic --------------------------------------------------------------------------


def test_normalise_is_what_the_kernel_keeps(v1: V1Driver) -> None:
    desired = Limits(memory=100_000_000, cpus=0.333333, pids=9, cpuset="0-3")
    assert v1.normalise("s", desired) == Limits(
        memory=100_000_000 // PAGE_SIZE * PAGE_SIZE, cpus=0.33333, pids=9, cpuset=None)
    assert v1.normalise("s", Limits(cpuset="2")) == Limits(cpuset="2")
    assert v1.normalise("s", Limits(cpu_shares=1024)) == Limits()  # the default: nothing to show


def test_v2_normalise_keeps_the_weight_of_the_shares(v2: V2Driver) -> None:
    assert v2.normalise("s", Limits(cpu_shares=500)) == Limits(cpu_shares=504)  # weight 58 reads back so
    assert v2.normalise("s", Limits(cpu_shares=1000)) == Limits(cpu_shares=1008)
    assert v2.normalise("s", Limits(cpu_shares=1024)) == Limits()


@pytest.mark.parametrize("relpath", ["../etc", "a//b", "a/./b", ""])
def test_paths_cannot_leave_the_hierarchy(v2: V2Driver, relpath: str) -> None:
    with pytest.raises(CgroupError, match=rf"^invalid cgroup path {relpath!r}$"):
        v2.create(relpath)


def test_remove_takes_empty_ancestors_up_to_the_parent_only(tmp_path: Path) -> None:
    driver = V2Driver(tmp_path)
    for leaf in ("rc/s1/web/nested", "rc/s1/db", "rc/s2/web"):
        (tmp_path / leaf).mkdir(parents=True)
    driver.remove("rc/s1/web", "rc")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["rc", "rc/s1", "rc/s1/db", "rc/s2",
                                                                                "rc/s2/web"]
    driver.remove("rc/s1/db", "rc")
    driver.remove("rc/s2/web", "rc")
    driver.remove("rc/s2/web", "rc")  # already gone: success
    assert [p.name for p in tmp_path.iterdir()] == ["rc"]


@pytest.mark.parametrize(("relpath", "parent"), [("other/s/web", "rc"), ("rc", "rc"), ("rcx/s/web", "rc")])
def test_remove_refuses_anything_outside_the_parent(tmp_path: Path, relpath: str, parent: str) -> None:
    (tmp_path / relpath).mkdir(parents=True)
    with pytest.raises(CgroupError, match=rf"^cgroup '{relpath}' is not below the parent '{parent}'$"):
        V2Driver(tmp_path).remove(relpath, parent)
    with pytest.raises(CgroupError, match=rf"^cgroup '{relpath}' is not below the parent '{parent}'$"):
        V2Driver(tmp_path).remove_if_empty(relpath, parent)
    assert (tmp_path / relpath).is_dir()  # refused before anything was touched


def test_owned_lists_our_names_in_any_hierarchy(v1: V1Driver) -> None:
    for root, relpath in [(v1.hierarchies["memory"], "rc/s1/web"), (v1.hierarchies["pids"], "rc/s1/web"),
                          (v1.hierarchies["pids"], "rc/s2/db"), (v1.hierarchies["memory"], "rc/s1/Not_Ours"),
                          (v1.hierarchies["memory"], "other/s3/web")]:
        (root / relpath).mkdir(parents=True)
    (v1.hierarchies["memory"] / "rc/s1/file").write_text("")
    assert v1.owned("rc") == {("s1", "web"), ("s2", "db")}
    assert v1.owned("missing") == set()
    assert v1.owned("rc", [("s2", "db"), ("s2", "web"), ("s1", "file")]) == {("s2", "db")}


def test_read_owned_reads_what_owned_finds_as_read_would(v1: V1Driver) -> None:
    """One listing per hierarchy tells which hierarchies hold each cgroup: a cgroup missing from
    one of them reads as None (its process could not be limited there), as read() says."""
    v1_cgroup(v1, "rc/s1/web", {"memory.limit_in_bytes": "67108864", "pids.max": "100"})
    v1_cgroup(v1, "rc/s2/db")
    (v1.hierarchies["pids"] / "rc/s2/db/pids.max").unlink()
    (v1.hierarchies["pids"] / "rc/s2/db").rmdir()  # gone from one hierarchy only
    web = v1.read("rc/s1/web")
    assert web is not None and (web.memory, web.pids) == (67108864, 100)
    assert v1.read_owned("rc") == {("s1", "web"): web, ("s2", "db"): None} \
        == {key: v1.read(f"rc/{key[0]}/{key[1]}") for key in v1.owned("rc")}
    assert v1.read_owned("rc", [("s1", "web"), ("s3", "gone")]) == {("s1", "web"): web}


def test_v1_write_refuses_limits_the_host_cannot_enforce(tmp_path: Path) -> None:
    driver = V1Driver({"cpu": tmp_path / "cpu", "cpuset": tmp_path / "cpuset"})
    assert driver.missing(Limits(memory=PAGE_SIZE, cpus=1, pids=1)) == ["memory", "pids"]
    with pytest.raises(CgroupError, match=r"^cannot limit s: no cgroup v1 hierarchy is mounted for memory, pids$"):
        driver.write("s", Limits(memory=PAGE_SIZE, pids=1))
