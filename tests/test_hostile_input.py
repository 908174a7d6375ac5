"""Hostile stack files through the CLI, as a user runs it: every case in tests/corpus/bad (a
file, or a directory of files) must end in exit 1 with exactly the error lines pinned in
`<case>.expected` (file:line:col and the field path; no traceback), the same from `apply`,
`diff` and `validate`, and leave the host and the state store exactly as they were.

One sandbox serves the module (a sandbox per case would cost more than the cases). A valid stack
is applied in it first and a foreign canary link planted, so "as they were" covers objects of
ours that a bad file must not touch, and objects of others. `apply` runs as a real CLI process;
`diff` and `validate` run in-process through the CLI's `main`, which is the same code path and
saves half a second each.

REGENERATE=1 rewrites every .expected file from what `apply` prints. Read the diff by eye: a
message that is unclear, or lacks its place or field path, is a bug in specs/, not a new pin.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconcile.cli import EXIT_ERROR, main
from tests.reliability import record
from tests.sandbox import REPO, Sandbox
from tests.specs_support import working_directory

pytestmark = pytest.mark.kernel  # its Sandboxes are built in a module-scoped fixture

CORPUS = Path(__file__).resolve().parent / "corpus" / "bad"
EXPECTED_SUFFIX = ".expected"
APPLIED_FIRST = REPO / "examples" / "stack.yaml"
CANARY = "canary0"
REGENERATE = os.environ.get("REGENERATE") == "1"
DAD_TIMEOUT = 10
"""Seconds for IPv6 duplicate address detection to settle on the links of the applied stack."""
APPLY_TIMEOUT = 60
"""Seconds: far above the slowest case (a hang, or a bomb being expanded, fails instead of
stalling the suite)."""

_COUNTERS_RE = re.compile(r"\[\d+:\d+\]")


def corpus_cases() -> list[str]:
    """Each entry of the corpus but the .expected files: a stack file (symlinks not followed:
    a link to /dev/zero is a case) or a directory of them."""
    return sorted(entry.name for entry in CORPUS.iterdir() if not entry.name.endswith(EXPECTED_SUFFIX))


def expected_path(case: str) -> Path:
    return CORPUS / (case.removesuffix(".yaml") + EXPECTED_SUFFIX)


@dataclass(frozen=True)
class HostState:
    """What a rejected file must leave untouched, in comparable form."""

    links: str
    netns: tuple[str, ...]
    netfilter: str
    processes: tuple[int, ...]
    cgroups: tuple[str, ...]
    state_store: tuple[tuple[str, str], ...]
    """(path, sha256) of every file under the state dir."""


def host_state(box: Sandbox) -> HostState:
    saved_rules = box.run("iptables-save").stdout
    # Comment lines carry a timestamp; chain counters tick with any traffic.
    netfilter = "".join(_COUNTERS_RE.sub("[-]", line) for line in saved_rules.splitlines(keepends=True)
                        if not line.startswith("#"))
    return HostState(
        links=box.snapshot(*(link["ifname"] for link in box.links())),
        netns=tuple(box.netns_names()),
        netfilter=netfilter,
        processes=tuple(sorted(box.processes())),
        cgroups=tuple(sorted(str(path) for path in Path("/sys/fs/cgroup").glob(f"*/{box.cgroup_parent}/**"))),
        state_store=tuple((str(path.relative_to(box.state_dir)), hashlib.sha256(path.read_bytes()).hexdigest())
                          for path in sorted(box.state_dir.rglob("*")) if path.is_file()),
    )


def wait_for_dad(box: Sandbox) -> None:
    """The kernel flips new link-local addresses from tentative by itself, a second or two after
    apply: wait for it, or the first comparison of host states would see it."""
    deadline = time.monotonic() + DAD_TIMEOUT
    while box.run("ip", "-6", "addr", "show", "tentative").stdout:
        assert time.monotonic() < deadline, "IPv6 addresses still tentative"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox with a foreign canary link and a valid stack of ours applied."""
    box = Sandbox(tmp_path_factory.mktemp("hostile"))
    try:
        box.sh(f"ip link add {CANARY} type bridge && ip addr add 192.0.2.1/24 dev {CANARY}"
               f" && sysctl -qw net.ipv6.conf.{CANARY}.disable_ipv6=1 && ip link set {CANARY} up")
        applied = box.reconcile("apply", str(APPLIED_FIRST))
        assert applied.returncode == 0, applied.stderr
        wait_for_dad(box)
        yield box
    finally:
        box.close()


@pytest.fixture(scope="module")
def tried() -> Iterator[Counter[str]]:
    """How many bad inputs went through the CLI, for the reliability report."""
    counts: Counter[str] = Counter()
    yield counts
    record("hostile", bad_inputs=counts["inputs"], cli_runs=counts["cli_runs"])


def run_in_process(box: Sandbox, verb: str, case: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`reconcile VERB CASE` through the CLI's main, in the corpus directory like `apply`."""
    capsys.readouterr()
    with working_directory(CORPUS):
        code = main(["--state-dir", str(box.state_dir), "--cgroup-parent", box.cgroup_parent, verb, case])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", corpus_cases())
def test_bad_input_is_refused_with_exactly_this_error(host: Sandbox, tried: Counter[str], case: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = host_state(host)
    # Run from the corpus directory, so the errors name the file as a user typing
    # `reconcile apply CASE` sees it, with no temporary path to normalise.
    applied = host.run("env", "-C", str(CORPUS), sys.executable, "-m", "reconcile", "apply", case,
                       check=False, timeout=APPLY_TIMEOUT)
    tried.update(inputs=1, cli_runs=1)
    assert (applied.returncode, applied.stdout) == (EXIT_ERROR, ""), applied.stderr
    assert "Traceback" not in applied.stderr
    if REGENERATE:
        expected_path(case).write_text(applied.stderr)
    assert applied.stderr == expected_path(case).read_text()
    for verb in ("validate", "diff"):
        assert run_in_process(host, verb, case, capsys) == (EXIT_ERROR, applied.stderr), verb
        tried.update(cli_runs=1)
    assert host_state(host) == before
