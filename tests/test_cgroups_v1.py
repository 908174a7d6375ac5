"""The cgroup v1 driver against the real kernel of this host (v1 hybrid), under a throwaway parent
per test, with a foreign canary cgroup that must come out byte-identical.

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

from kernel.cgroups import CgroupError, Limits, detect
from kernel.cgroups_v1 import V1Driver
from tests.sandbox import purge_cgroup

CGROUP_DIR = Path("/sys/fs/cgroup")
MiB = 1 << 20
EVERYTHING = Limits(memory=64 * MiB, cpus=0.5, pids=100, cpuset="0")


@pytest.fixture(scope="module")
def driver() -> V1Driver:
    found = detect()
    if os.geteuid() != 0 or not isinstance(found, V1Driver) or found.missing(EVERYTHING):
        pytest.skip("needs root on a host with cgroup v1 memory, cpu, cpuacct, cpuset and pids hierarchies")
    return found


def _snapshot(path: Path) -> dict[str, str]:
    """The canary's configuration and members, byte for byte (counters left out: they move)."""
    names = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
             "memory.swappiness", "cgroup.procs", "tasks")
    return {"entries": " ".join(sorted(os.listdir(path))), **{name: (path / name).read_text() for name in names}}


@pytest.fixture(scope="module")
def canary(driver: V1Driver) -> Iterator[Path]:
    """A foreign cgroup beside ours, with a limit of its own."""
    path = driver.hierarchies["memory"] / f"rc-canary-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        (path / "memory.limit_in_bytes").write_text("50331648")
        before = _snapshot(path)
        yield path
        assert _snapshot(path) == before
    finally:
        purge_cgroup(path)


@pytest.fixture
def parent(driver: V1Driver, canary: Path) -> Iterator[str]:
    """A fresh parent for one test; everything under it is killed and removed afterwards, even
    when the test (or the driver) failed half-way."""
    name = f"rc-test-cg-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        for hierarchy in CGROUP_DIR.iterdir():
            purge_cgroup(hierarchy / name)


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


def test_detects_this_host(driver: V1Driver) -> None:
    assert driver.hierarchies == {name: CGROUP_DIR / name for name in ("cpu", "cpuacct", "cpuset", "memory", "pids")}


def test_create_write_read_round_trip(driver: V1Driver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    assert procs == [f"/sys/fs/cgroup/{name}/{relpath}/cgroup.procs"
                     for name in ("cpu", "cpuacct", "cpuset", "memory", "pids")]
    assert driver.read(relpath) == Limits()
    for level in (parent, f"{parent}/stack", relpath):  # joinable at every level
        cpuset = CGROUP_DIR / "cpuset" / level
        assert ((cpuset / "cpuset.cpus").read_text(), (cpuset / "cpuset.mems").read_text()) == (
            (CGROUP_DIR / "cpuset/cpuset.cpus").read_text(), (CGROUP_DIR / "cpuset/cpuset.mems").read_text())

    driver.write(relpath, EVERYTHING)
    assert driver.read(relpath) == EVERYTHING == driver.normalise(relpath, EVERYTHING)
    written = {name: (CGROUP_DIR / name.split(".")[0] / relpath / name).read_text() for name in (
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "cpu.cfs_period_us", "cpu.cfs_quota_us",
        "pids.max", "cpuset.cpus")}
    assert written == {"memory.limit_in_bytes": "67108864\n", "memory.memsw.limit_in_bytes": "67108864\n",
                       "cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "50000\n", "pids.max": "100\n",
                       "cpuset.cpus": "0\n"}
    assert driver.create(relpath) == procs
    assert driver.read(relpath) == EVERYTHING
    assert driver.read(f"{parent}/stack/nothing") is None


def test_change_in_place_keeps_the_process(driver: V1Driver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    with running(driver.create(relpath), ["sleep", "60"]) as proc:
        driver.write(relpath, EVERYTHING)
        changed = Limits(memory=100_000_000, cpus=1.5, pids=50, cpuset="1")
        driver.write(relpath, changed)
        assert driver.read(relpath) == driver.normalise(relpath, changed) == Limits(
            memory=99_999_744, cpus=1.5, pids=50, cpuset="1")
        driver.write(relpath, Limits())
        assert driver.read(relpath) == Limits()
        assert proc.poll() is None
        assert driver.procs(relpath) == [proc.pid]


def test_memory_below_usage_is_refused_and_nothing_changes(driver: V1Driver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, EVERYTHING)
    with running(procs, python(HOLD_48_MIB)) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with pytest.raises(CgroupError, match=rf"^memory 8388608 is below the current usage \d+ of "
                                              rf"{relpath}; the kernel refused \(EBUSY\)$"):
            driver.write(relpath, Limits(memory=8 * MiB, cpus=1, pids=10, cpuset="0"))
        assert driver.read(relpath) == EVERYTHING
        # memory is written first, so a later refusal has to put it back
        with pytest.raises(CgroupError, match=rf"^cpuset 7 of {relpath}: the kernel refused '7' in cpuset.cpus "):
            driver.write(relpath, Limits(memory=128 * MiB, cpus=0.5, pids=100, cpuset="7"))
        assert driver.read(relpath) == EVERYTHING
        assert (CGROUP_DIR / "memory" / relpath / "memory.memsw.limit_in_bytes").read_text() == "67108864\n"
        assert proc.poll() is None


def test_out_of_memory_kills_and_is_counted(driver: V1Driver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, Limits(memory=64 * MiB))
    proc = spawn(procs, python("held = b'x' * (200 << 20)\nprint('survived')"))
    stdout, _ = proc.communicate(timeout=30)
    usage = driver.usage(relpath)
    assert (proc.returncode, stdout) == (-signal.SIGKILL, "")
    assert usage is not None and usage.oom_kills is not None and usage.oom_kills >= 1
    assert usage.memory_peak_bytes is not None and usage.memory_peak_bytes <= 64 * MiB


def test_pids_limit_stops_a_fork_loop(driver: V1Driver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, Limits(pids=5))
    proc = spawn(procs, ["sh", "-c", "for i in $(seq 20); do sleep 2 & done; wait"])
    time.sleep(0.3)
    usage = driver.usage(relpath)
    _, stderr = proc.communicate(timeout=30)
    assert usage is not None and usage.pids is not None and usage.pids <= 5
    assert re.search(r"Cannot fork", stderr), stderr
    assert proc.returncode != 0


def test_cpu_quota_throttles_a_busy_loop(driver: V1Driver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    procs = driver.create(relpath)
    driver.write(relpath, Limits(cpus=0.2))
    started = time.monotonic()
    proc = spawn(procs, python("import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"))
    proc.communicate(timeout=30)
    wall_usec = (time.monotonic() - started) * 1e6
    usage = driver.usage(relpath)
    assert usage is not None and usage.cpu_usec is not None and usage.throttled_periods is not None
    assert usage.throttled_periods > 0 and (usage.throttled_usec or 0) > 0
    assert 0 < usage.cpu_usec <= 0.35 * wall_usec, (usage.cpu_usec, wall_usec)


def test_remove_waits_out_the_kernel_and_keeps_the_parent(driver: V1Driver, parent: str) -> None:
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


def test_remove_of_a_cgroup_still_in_use_says_who_holds_it(driver: V1Driver, parent: str) -> None:
    relpath = f"{parent}/stack/web"
    with running(driver.create(relpath), ["sleep", "60"]) as proc:
        with pytest.raises(CgroupError, match=rf"^cannot remove cgroup /sys/fs/cgroup/cpu/{relpath}: Device or "
                                              rf"resource busy \(processes still in it: {proc.pid}\)$"):
            driver.remove(relpath, parent)
        assert driver.read(relpath) == Limits()


def test_owned_finds_ours_and_nothing_foreign(driver: V1Driver, parent: str) -> None:
    driver.create(f"{parent}/s1/web")
    driver.create(f"{parent}/s2/db")
    (driver.hierarchies["pids"] / parent / "s3" / "cache").mkdir(parents=True)  # half-made: still ours
    (driver.hierarchies["memory"] / parent / "s1" / "Not_Ours").mkdir()
    assert driver.owned(parent) == {("s1", "web"), ("s2", "db"), ("s3", "cache")}
