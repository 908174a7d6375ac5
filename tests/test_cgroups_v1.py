"""The cgroup driver of this host against its real kernel: v1 hierarchies here (hybrid), the v2
unified tree in the VM lane (scripts/vm/vm-test.sh); under a throwaway parent per test, with a
foreign canary cgroup that must come out byte-identical. What only one layout has (v1's cpuset.mems
copied into each level, v2's delegation through cgroup.subtree_control, memory+swap) is checked
on that layout.

What is checked here is the kernel's enforcement of what the driver wrote (OOM kill, fork
refusal, CPU throttling), with loose bounds: these are not timings of our code.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kernel import cgroups_common
from kernel.cgroups import CgroupDriver, CgroupError, Limits
from kernel.cgroups_v1 import V1Driver
from kernel.cgroups_v2 import V2Driver
from tests.cgroupfs import DRIVER, V2, directory, limit_file, limit_text
from tests.sandbox import purge_cgroup
from tests.waiting import scaled

CGROUP_DIR = Path("/sys/fs/cgroup")
MiB = 1 << 20
EVERYTHING = Limits(memory=64 * MiB, cpus=0.5, pids=100, cpuset="0", cpu_shares=512)
SWAP = ("memory.swap.max", "0") if V2 else ("memory.memsw.limit_in_bytes", str(64 * MiB))
"""Swap alongside EVERYTHING's memory limit: none on v2; memory+swap capped at the limit on v1."""
REFUSED = (r"the kernel could not reclaim it \(v2 would OOM-kill instead\)" if V2
           else r"the kernel refused \(EBUSY\)")
"""Why a memory limit below the usage is refused: by the kernel on v1, by the driver on v2."""


@pytest.fixture(scope="module")
def driver() -> CgroupDriver:
    if os.geteuid() != 0 or DRIVER.missing(EVERYTHING):
        pytest.skip("needs root on a host with the memory, cpu, cpuset and pids controllers")
    return DRIVER


def _snapshot(path: Path) -> dict[str, str]:
    """The canary's configuration and members, byte for byte (counters left out: they move)."""
    names = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
             "memory.swappiness", "tasks",  # v1
             "memory.max", "memory.swap.max", "memory.high", "memory.low", "cgroup.subtree_control",  # v2
             "cgroup.procs")
    return {"entries": " ".join(sorted(os.listdir(path))),
            **{name: (path / name).read_text() for name in names if (path / name).exists()}}


@pytest.fixture(scope="module")
def canary(driver: CgroupDriver) -> Iterator[Path]:
    """A foreign cgroup beside ours, with a limit of its own."""
    limit = limit_file(f"rc-canary-{uuid.uuid4().hex[:8]}", "memory")
    limit.parent.mkdir()
    try:
        limit.write_text("50331648")
        before = _snapshot(limit.parent)
        yield limit.parent
        assert _snapshot(limit.parent) == before
    finally:
        purge_cgroup(limit.parent)


@pytest.fixture
def parent(driver: CgroupDriver, canary: Path) -> Iterator[str]:
    """A fresh parent for one test; everything under it is killed and removed afterwards, even
    when the test (or the driver) failed half-way."""
    name = f"rc-test-cg-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        for root in driver.removal_roots():
            purge_cgroup(root / name)


def _join(procs: list[str]) -> None:
    """Run in the child between fork and exec, so the program starts inside the cgroup."""
    for path in procs:
        with open(path, "w") as f:
            f.write("0")


def spawn(procs: list[str], argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, preexec_fn=lambda: _join(procs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@contextmanager
def running(procs: list[str], argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A process in the cgroup for the duration of the block."""
    proc = spawn(procs, argv)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def python(code: str) -> list[str]:
    return [sys.executable, "-S", "-c", code]


HOLD_48_MIB = "import sys, time\nheld = b'x' * (48 << 20)\nprint('ready', flush=True)\ntime.sleep(60)"


def test_detects_this_host(driver: CgroupDriver) -> None:
    if isinstance(driver, V2Driver):
        assert driver.roots() == [CGROUP_DIR]
        assert {"memory", "cpu", "cpuset", "pids"} <= driver.available()
    else:
        assert isinstance(driver, V1Driver)
        assert driver.hierarchies == {name: CGROUP_DIR / name
                                      for name in ("cpu", "cpuacct", "cpuset", "memory", "pids")}


def _joinable_with_every_controller(driver: CgroupDriver, levels: list[str]) -> None:
    """v1: each new cpuset level got its parent's CPUs and memory nodes (the kernel leaves them
    empty and refuses processes); v2: each level above the leaf delegates our controllers to its
    children (cgroup.subtree_control), the leaf delegates nothing (it holds the processes)."""
    if isinstance(driver, V1Driver):
        root = driver.hierarchies["cpuset"]
        for level in levels:
            assert [(root / level / name).read_text() for name in ("cpuset.cpus", "cpuset.mems")] == \
                [(root / name).read_text() for name in ("cpuset.cpus", "cpuset.mems")]
        return
    for level in ["", *levels[:-1]]:
        assert {"memory", "cpu", "cpuset", "pids"} <= set(
            (driver.roots()[0] / level / "cgroup.subtree_control").read_text().split()), level
    assert (driver.roots()[0] / levels[-1] / "cgroup.subtree_control").read_text() == ""


def test_create_write_read_round_trip(driver: CgroupDriver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    assert procs == [str(root / relpath / "cgroup.procs") for root in driver.roots()]
    assert driver.read(relpath) == Limits()
    _joinable_with_every_controller(driver, [parent, f"{parent}/stack", relpath])

    driver.write(relpath, EVERYTHING)
    assert driver.read(relpath) == EVERYTHING == driver.normalise(relpath, EVERYTHING)
    written = {field: limit_text(relpath, field) for field in ("memory", "cpus", "pids", "cpuset", "cpu_shares")}
    assert written == {"memory": "67108864", "cpus": "50000 100000", "pids": "100", "cpuset": "0",
                       "cpu_shares": "59" if V2 else "512"}  # v2: the weight runc and crun give 512 shares
    assert (directory(relpath, "memory") / SWAP[0]).read_text() == SWAP[1] + "\n"
    assert driver.create(relpath) == procs
    assert driver.read(relpath) == EVERYTHING
    assert driver.read(f"{parent}/stack/nothing") is None


def test_change_in_place_keeps_the_process(driver: CgroupDriver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    with running(driver.create(relpath), ["sleep", "60"]) as proc:
        driver.write(relpath, EVERYTHING)
        changed = Limits(memory=100_000_000, cpus=1.5, pids=50, cpuset="1", cpu_shares=3000)
        driver.write(relpath, changed)
        assert driver.read(relpath) == driver.normalise(relpath, changed) == Limits(
            memory=99_999_744, cpus=1.5, pids=50, cpuset="1", cpu_shares=3008 if V2 else 3000)
        driver.write(relpath, Limits())
        assert driver.read(relpath) == Limits()
        assert limit_text(relpath, "cpu_shares") == ("100" if V2 else "1024")  # the default put back
        assert proc.poll() is None
        assert driver.procs(relpath) == [proc.pid]


def test_memory_below_usage_is_refused_and_nothing_changes(driver: CgroupDriver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, EVERYTHING)
    with running(procs, python(HOLD_48_MIB)) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with pytest.raises(CgroupError, match=rf"^memory 8388608 is below the current usage \d+ of "
                                              rf"{relpath}; {REFUSED}$"):
            driver.write(relpath, Limits(memory=8 * MiB, cpus=1, pids=10, cpuset="0"))
        assert driver.read(relpath) == EVERYTHING
        # memory is written first, so a later refusal has to put it back
        with pytest.raises(CgroupError, match=rf"^cpuset 7 of {relpath}: the kernel refused '7' in cpuset.cpus "):
            driver.write(relpath, Limits(memory=128 * MiB, cpus=0.5, pids=100, cpuset="7"))
        assert driver.read(relpath) == EVERYTHING
        assert (directory(relpath, "memory") / SWAP[0]).read_text() == SWAP[1] + "\n"
        assert proc.poll() is None


def test_out_of_memory_kills_and_is_counted(driver: CgroupDriver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, Limits(memory=64 * MiB))
    proc = spawn(procs, python("held = b'x' * (200 << 20)\nprint('survived')"))
    stdout, _ = proc.communicate(timeout=scaled(30))
    usage = driver.usage(relpath)
    assert (proc.returncode, stdout) == (-signal.SIGKILL, "")
    assert usage is not None and usage.oom_kills is not None and usage.oom_kills >= 1
    assert usage.memory_peak_bytes is not None and usage.memory_peak_bytes <= 64 * MiB


def test_pids_limit_stops_a_fork_loop(driver: CgroupDriver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, Limits(pids=5))
    proc = spawn(procs, ["sh", "-c", "for i in $(seq 20); do sleep 2 & done; wait"])
    time.sleep(0.3)
    usage = driver.usage(relpath)
    _, stderr = proc.communicate(timeout=scaled(30))
    assert usage is not None and usage.pids is not None and usage.pids <= 5
    assert re.search(r"Cannot fork", stderr), stderr
    assert proc.returncode != 0


def test_cpu_quota_throttles_a_busy_loop(driver: CgroupDriver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, Limits(cpus=0.2))
    started = time.monotonic()
    proc = spawn(procs, python("import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"))
    proc.communicate(timeout=scaled(30))
    wall_usec = (time.monotonic() - started) * 1e6
    usage = driver.usage(relpath)
    assert usage is not None and usage.cpu_usec is not None and usage.throttled_periods is not None
    assert usage.throttled_periods > 0 and (usage.throttled_usec or 0) > 0
    assert 0 < usage.cpu_usec <= 0.35 * wall_usec, (usage.cpu_usec, wall_usec)


def test_remove_waits_out_the_kernel_and_keeps_the_parent(driver: CgroupDriver, parent: str) -> None:
    web, db = f"{parent}/stack/web", f"{parent}/stack/db"
    proc = spawn(driver.create(web), ["sleep", "60"])
    driver.create(db)
    proc.kill()  # the cgroup stays busy for a moment after the kill: remove() retries EBUSY
    driver.remove(web, parent)
    proc.wait()
    driver.remove(web, parent)  # already gone: success
    for root in driver.roots():
        assert sorted(p.name for p in (root / parent).iterdir() if p.is_dir()) == ["stack"]
        assert sorted(p.name for p in (root / parent / "stack").iterdir() if p.is_dir()) == ["db"]
    driver.remove(db, parent)
    for root in driver.roots():
        assert [p.name for p in (root / parent).iterdir() if p.is_dir()] == []


def test_remove_of_a_cgroup_still_in_use_says_who_holds_it(driver: CgroupDriver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    with running(driver.create(relpath), ["sleep", "60"]) as proc:
        with pytest.raises(CgroupError, match=rf"^cannot remove cgroup {driver.roots()[0] / relpath}: Device or "
                                              rf"resource busy \(processes still in it: {proc.pid}\)$"):
            driver.remove(relpath, parent)
        assert driver.read(relpath) == Limits()


def test_owned_finds_ours_and_nothing_foreign(driver: CgroupDriver, parent: str) -> None:
    driver.create(f"{parent}/s1/web")
    driver.create(f"{parent}/s2/db")
    directory(f"{parent}/s3/cache", "pids").mkdir(parents=True)  # half-made: still ours
    directory(f"{parent}/s1/Not_Ours", "memory").mkdir()
    assert driver.owned(parent) == {("s1", "web"), ("s2", "db"), ("s3", "cache")}
    # A focused pass asks about some containers only: a stat each, in every hierarchy.
    assert driver.owned(parent, [("s3", "cache"), ("s2", "gone"), ("s1", "db")]) == {("s3", "cache")}


def test_a_write_cut_short_leaves_the_cgroup_a_run_reads_back_telling(driver: CgroupDriver, parent: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With the runtime's child made (show_limits), a change writes the child's shown files
    first and the container's cgroup's last, so a run killed between them leaves the cgroup a
    next run reads with its old limits (it writes them again), never a child lagging below a
    cgroup that reads as done; a bounded limit raised (v1's CPU quota) is lifted in the child
    first (-1: its parent's applies) and set there once the parent's is up."""
    relpath = f"{parent}/s/web"
    driver.create(relpath)
    driver.write(relpath, Limits(memory=64 * MiB, cpus=0.25, pids=20))
    driver.show_limits(relpath)
    written: list[tuple[str, str]] = []
    real = cgroups_common.write_text
    monkeypatch.setattr(cgroups_common, "write_text",
                        lambda path, value: (written.append((str(path), value)), real(path, value))[1])
    driver.write(relpath, Limits(memory=128 * MiB, cpus=0.5, pids=30))
    names = [(("child " if "/ctr/" in path else "") + Path(path).name, value) for path, value in written]
    quota = "cpu.max" if V2 else "cpu.cfs_quota_us"
    ours = [i for i, (name, _) in enumerate(names) if not name.startswith("child ")]
    theirs = [i for i, (name, _) in enumerate(names) if name.startswith("child ")]
    if V2:  # no bound: every child write first
        assert max(theirs) < min(ours), names
    else:
        assert names[theirs[-1]] == (f"child {quota}", "50000") and theirs[-1] > max(ours), names
        assert (f"child {quota}", "-1") in names[:min(ours)], names
        assert all(i < min(ours) for i in theirs[:-1]), names
    assert [limit_text(f"{relpath}/ctr", field) for field in ("memory", "pids")] == [str(128 * MiB), "30"]
