"""The watch agent's allocator (kernel/memory.py): which one it re-executes itself on, and that
the release between keys gives free memory back to the kernel on each of them. The agent's own
run on jemalloc, and the processes it starts not on it, are in tests/test_watch_e2e.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.memory import JEMALLOC_CONF, PRELOADED, agent_allocator, forget_preload, installed_jemalloc

REPO = Path(__file__).resolve().parent.parent

JEMALLOC = "libjemalloc.so.2"


def test_the_agent_runs_on_jemalloc_where_the_host_has_it() -> None:
    assert agent_allocator({"LD_PRELOAD": ""}, JEMALLOC) == {"PYTHONMALLOC": "malloc", "LD_PRELOAD": JEMALLOC,
                                                             "MALLOC_CONF": JEMALLOC_CONF, PRELOADED: JEMALLOC}


def test_without_jemalloc_the_agent_runs_on_the_c_librarys_malloc() -> None:
    assert agent_allocator({}, None) == {"PYTHONMALLOC": "malloc"}


@pytest.mark.parametrize("theirs", [{"LD_PRELOAD": "libeatmydata.so"}, {"MALLOC_CONF": "narenas:2"}])
def test_a_users_own_preload_or_jemalloc_configuration_is_left_as_it_is(theirs: dict[str, str]) -> None:
    assert agent_allocator(theirs, JEMALLOC) == {"PYTHONMALLOC": "malloc"}


def test_the_preload_is_kept_from_what_the_agent_starts() -> None:
    ours = {"PATH": "/bin", **agent_allocator({}, JEMALLOC)}
    forget_preload(ours)
    assert ours == {"PATH": "/bin", "PYTHONMALLOC": "malloc"}


@pytest.mark.parametrize("theirs", [
    {"LD_PRELOAD": "libjemalloc.so.2", "MALLOC_CONF": "narenas:2"},
    {"LD_PRELOAD": "/opt/libjemalloc.so.2:libfoo.so", "MALLOC_CONF": JEMALLOC_CONF},  # as ours, but theirs
])
def test_a_users_preload_is_passed_on(theirs: dict[str, str]) -> None:
    environ = dict(theirs)
    forget_preload(environ)
    assert environ == theirs


def test_setup_installed_jemalloc() -> None:
    """scripts/apt-packages.sh lists libjemalloc2: the agent's allocator on our hosts."""
    assert installed_jemalloc(), "scripts/setup.sh installs libjemalloc2"


RELEASE = """
import gc, re, sys
from kernel.memory import release_free_memory

def rss() -> int:
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

assert ("/libjemalloc.so" in open("/proc/self/maps").read()) == (sys.argv[1] == "jemalloc")
before = rss()
objects = [b"%07d" % i * 25 for i in range(300_000)]  # ~64 MiB of 200-byte objects
kept = objects[::int(sys.argv[2])] if sys.argv[2] != "0" else []
grown = rss()
del objects
gc.collect()
freed = rss()
release_free_memory()
print(before, grown, freed, rss())
"""


@pytest.mark.parametrize(("allocator", "keep_every"), [
    # glibc returns a freed block at the top of its heap by itself; what malloc_trim adds is the
    # free pages among blocks still in use: one object in 100 is kept.
    ("glibc", 100),
    # jemalloc returns freed pages over ~10 s, and only as something allocates or frees; the
    # purge returns at once those of its slabs with nothing left in use (so nothing is kept:
    # one object in 100 kept would leave something in every slab).
    ("jemalloc", 0),
])
def test_releasing_gives_free_memory_back_to_the_kernel(allocator: str, keep_every: int) -> None:
    env = {**os.environ, "PYTHONMALLOC": "malloc", "PYTHONPATH": str(REPO)}
    env.pop("LD_PRELOAD", None)
    env.pop("MALLOC_CONF", None)
    if allocator == "jemalloc":
        env |= agent_allocator({}, installed_jemalloc())
    run = subprocess.run([sys.executable, "-c", RELEASE, allocator, str(keep_every)], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    before, grown, freed, released = map(int, run.stdout.split())
    assert grown - before > 48 * 1024  # KiB
    assert freed - before > (grown - before) / 2, "freed memory was returned before the release"
    assert released - before < (grown - before) / 4
