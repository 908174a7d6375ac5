"""Confinement (issue 12), on the real kernel, as a user runs the CLI (inside a sandbox).

The escape corpus (tests/escape_corpus.py) runs twice per stack: as a container's own program
and through `reconcile exec` into another container. Under the default confinement every
attempt must fail; under `privileged: true` most must succeed, or the corpus could not tell.
Then `exec` itself: the container's confinement, its limits, its death with a killed CLI; and a
SIGKILLed container's exit status.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cgroupfs import V2
from tests.escape_corpus import (
    CORPUS,
    CORPUS_TARGET,
    HOSTONLY_TOKEN,
    VOLUME_TARGET,
    VOLUME_TOKEN,
    Result,
    finished,
    parse_results,
    write_corpus,
)
from tests.sandbox import ONE_AT_A_TIME, Sandbox
from tests.waiting import scaled

DOCKER_CAPS = 0xA80425FB
"""Docker's default bounding set, as /proc/PID/status prints it."""
CAP_CHOWN, CAP_NET_ADMIN = 0, 12
MIN_PRIVILEGED_ESCAPES = 15
PRINTK_RATELIMIT = Path("/proc/sys/kernel/printk_ratelimit")
"""The host-global sysctl the corpus writes (and writes back) when it escapes."""
CONFINEMENT_FIELDS = ("CapBnd", "CapPrm", "CapEff", "Seccomp", "Seccomp_filters", "NoNewPrivs")


@dataclass
class Host:
    """What the corpus needs from the host, and what it must leave as it was."""

    mark: str
    corpus: Path
    hostonly: Path
    sentinel: subprocess.Popen[bytes]
    printk_ratelimit: str
    hostname: str

    def root_marker(self, mode: str) -> Path:
        return Path("/") / f"{self.mark}-{mode}"


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory on the host's root filesystem outside /tmp (which containers get a tmpfs
    over anyway), so that only the runtime's own masking hides what is in it. Requested before
    `sandbox`, it is removed after the sandbox and its containers are gone."""
    path = Path("/var/tmp") / f"rc-confinement-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host(outside: Path, sandbox: Sandbox, tmp_path: Path) -> Iterator[Host]:
    """The sandbox's state dir moved where a container's lower layer would show it; the corpus
    files; a host-only tmpfs (mounted in the sandbox's mount namespace only: the container's
    root shows the empty directory under it) holding a marker and the volume source with
    symlinks to the marker; a sentinel process outside every container."""
    sandbox.state_dir = outside / "state"
    sandbox.state_dir.mkdir()
    mark = f"rc-escape-{uuid.uuid4().hex[:12]}"
    hostonly = outside / "hostonly"
    hostonly.mkdir()
    sandbox.sh(f"""
mount -t tmpfs -o mode=755 rc-hostonly {hostonly}
echo {HOSTONLY_TOKEN}{uuid.uuid4().hex} > {hostonly}/marker
mkdir {hostonly}/vol
echo {VOLUME_TOKEN} > {hostonly}/vol/inside
ln -s {hostonly}/marker {hostonly}/vol/abs-link
ln -s ../marker {hostonly}/vol/rel-link
ln -s {hostonly} {hostonly}/vol/dir-link
""")
    sentinel_arg = f"{time.time() % 100000 + 100000:.3f}"
    sentinel = subprocess.Popen(["sleep", sentinel_arg])
    root_dev = os.stat("/").st_dev
    corpus = tmp_path / "corpus"
    write_corpus(corpus, {
        "RC_MARK": mark,
        "RC_STATE_DIR": str(sandbox.state_dir),
        "RC_DISK": f"{os.major(root_dev)}:{os.minor(root_dev)}",
        "RC_DISK_FS": _root_fstype(),
        "RC_HOSTONLY": str(hostonly),
        "RC_SENTINEL": sentinel_arg,
        "RC_SENTINEL_PID": str(sentinel.pid),
    })
    state = Host(mark, corpus, hostonly, sentinel, PRINTK_RATELIMIT.read_text(), socket.gethostname())
    try:
        yield state
    finally:
        sentinel.kill()
        sentinel.wait()
        for mode in ("program", "exec"):
            state.root_marker(mode).unlink(missing_ok=True)
        if PRINTK_RATELIMIT.read_text() != state.printk_ratelimit:
            PRINTK_RATELIMIT.write_text(state.printk_ratelimit)
        if socket.gethostname() != state.hostname:
            subprocess.run(["hostname", state.hostname], check=True)


def _root_fstype() -> str:
    """The filesystem type of the host's / (the last mount on it wins, as in the kernel)."""
    rows = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [fields[fields.index("-") + 1] for fields in rows if fields[4] == "/"][-1]


def _corpus_stack(name: str, host: Host, extra: str) -> str:
    """b keeps a secret in its own root; prog runs the corpus as its program; plain is what the
    corpus is exec'd into. `extra` goes into prog and plain."""
    volumes = f'["{host.corpus}:{CORPUS_TARGET}:ro", "{host.hostonly}/vol:{VOLUME_TARGET}:ro"]'
    secret = ("cat /proc/sys/kernel/random/uuid > /secret-b 2>/dev/null "
              "|| cat /proc/sys/kernel/random/uuid > /tmp/secret-b; exec sleep 1000")
    return f"""\
name: {name}
containers:
  b:
    command: ["/bin/sh", "-c", "{secret}"]
  prog:
    command: ["/bin/sh", "-c", "sh {CORPUS_TARGET}/run.sh program; exec sleep 1000"]
    volumes: {volumes}
    depends_on: [b]
{extra}
  plain:
    command: ["sleep", "1000"]
    volumes: {volumes}
    depends_on: [b]
{extra}
"""


def _apply(sandbox: Sandbox, path: Path) -> None:
    result = sandbox.reconcile("apply", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _exec(sandbox: Sandbox, name: str, *argv: str) -> str:
    result = sandbox.reconcile("exec", name, "--", *argv)
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result.stdout


def _run_corpus(sandbox: Sandbox, host: Host, stack: str, extra: str = "") -> dict[str, dict[str, Result]]:
    """The corpus' verdicts by mode ("program", "exec"), then by attempt; the writes to `/`
    judged from the host."""
    _apply(sandbox, sandbox.write(f"{stack}.yaml", _corpus_stack(stack, host, extra)))
    deadline = time.monotonic() + scaled(120)
    log = ""
    while time.monotonic() < deadline and not finished(log, "program"):
        time.sleep(0.2)
        log = sandbox.reconcile("logs", f"{stack}/prog").stdout
    assert finished(log, "program"), f"the corpus did not finish as a program:\n{log}"
    executed = sandbox.reconcile("exec", f"{stack}/plain", "--", "/bin/sh", f"{CORPUS_TARGET}/run.sh", "exec",
                                 timeout=180)
    assert finished(executed.stdout, "exec"), executed.stdout + executed.stderr
    runs = {"program": parse_results(log, "program"), "exec": parse_results(executed.stdout, "exec")}
    for mode, results in runs.items():
        for name, result in results.items():
            if result.verdict == "HOSTCHECK":
                marker = host.root_marker(mode)
                results[name] = (Result("ESCAPED", f"{result.detail}; it is on the host's root as {marker}")
                                 if marker.exists() else
                                 Result("blocked", f"{result.detail}; nothing of it on the host's root"))
    secret = sandbox.reconcile("exec", f"{stack}/b", "--", "sh", "-c", "cat /secret-b || cat /tmp/secret-b")
    runs["program"]["b-secret-in-output"] = _secret_verdict(secret.stdout.strip(), log)
    runs["exec"]["b-secret-in-output"] = _secret_verdict(secret.stdout.strip(), executed.stdout)
    print(_table(runs))
    return runs


def _secret_verdict(secret: str, output: str) -> Result:
    """b's token (known only at run time, never in any spec) in the corpus' output is an escape,
    whichever attempt printed it."""
    assert len(secret) == 36, f"b did not keep its secret: {secret!r}"
    if secret in output:
        return Result("ESCAPED", "container b's secret appears in the output")
    return Result("blocked", "container b's secret appears nowhere in the output")


def _table(runs: dict[str, dict[str, Result]]) -> str:
    lines = []
    for mode, results in runs.items():
        counts = {v: sum(r.verdict == v for r in results.values()) for v in ("ESCAPED", "blocked", "n/a", "error")}
        lines.append(f"-- {mode}: {counts}")
        lines += [f"   {name:24} {r.verdict:8} {r.detail}" for name, r in results.items()]
    return "\n".join(lines)


def _complete(runs: dict[str, dict[str, Result]]) -> list[str]:
    """Attempts without a verdict, and broken probes: either is a failure of the corpus."""
    expected = {a.name for a in CORPUS}
    problems = [f"{mode} {name}: no verdict" for mode, results in runs.items() for name in expected - set(results)]
    return problems + [f"{mode} {name}: {r.detail}" for mode, results in runs.items()
                       for name, r in results.items() if r.verdict == "error"]


READ_ONLY_WITH_TMPFS = '    read_only: true\n    tmpfs: [/tmp, "/run:exec", /var/tmp]'
"""The usual hardening, with a tmpfs that allows exec: no tmpfs opens a way out (the corpus'
scratch directory is then the tmpfs at /tmp)."""


# `outside` comes first in these signatures: set up before the sandbox, torn down after it.
@ONE_AT_A_TIME  # its escapes write host-wide settings (a sysctl, the hostname), checked after
@pytest.mark.parametrize("extra", ["", "    userns: auto", READ_ONLY_WITH_TMPFS],
                         ids=["docker-default", "userns-auto", "read-only-with-tmpfs"])
def test_the_escape_corpus_fails_under_the_default_confinement(outside: Path, sandbox: Sandbox, host: Host,
                                                               extra: str) -> None:
    assert len(CORPUS) >= 20
    runs = _run_corpus(sandbox, host, "esc", extra)
    problems = _complete(runs)
    assert problems == [], "\n".join(problems) + "\n" + _table(runs)
    escapes = [f"{mode} {name}: {r.detail}" for mode, results in runs.items()
               for name, r in results.items() if r.verdict == "ESCAPED"]
    assert escapes == [], "\n".join(escapes) + "\n" + _table(runs)
    assert not host.root_marker("program").exists() and not host.root_marker("exec").exists()
    assert socket.gethostname() == host.hostname
    assert PRINTK_RATELIMIT.read_text() == host.printk_ratelimit


@ONE_AT_A_TIME  # its escapes write host-wide settings (a sysctl, the hostname), checked after
def test_the_escape_corpus_tells_when_privileged(outside: Path, sandbox: Sandbox, host: Host) -> None:
    runs = _run_corpus(sandbox, host, "escpriv", "    privileged: true")
    problems = _complete(runs)
    assert problems == [], "\n".join(problems) + "\n" + _table(runs)
    for mode, results in runs.items():
        escaped = [name for name, r in results.items() if r.verdict == "ESCAPED"]
        assert len(escaped) >= MIN_PRIVILEGED_ESCAPES, f"{mode}: only {escaped} escaped\n{_table(runs)}"
    # Even privileged, the container's UTS namespace is its own.
    assert socket.gethostname() == host.hostname


def _status_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def _init_status(pid: int) -> dict[str, str]:
    """/proc/PID/status of the container's PID 1 (the pid `status` reports)."""
    fields = _status_fields(Path(f"/proc/{pid}/status").read_text())
    assert fields["NSpid"].split()[-1] == "1", f"status pid {pid} is not the container's PID 1: {fields['NSpid']}"
    return fields


def test_exec_gets_the_containers_confinement(sandbox: Sandbox) -> None:
    """And the OOM score is Docker's 0, not the one of whoever ran apply or exec (an agent run
    with a lower one would otherwise shield every container from the OOM killer)."""
    own = Path("/proc/self/oom_score_adj")
    before = own.read_text()
    own.write_text("300")  # inherited by the CLI runs below
    try:
        _apply(sandbox, sandbox.write("conf.yaml", """\
name: conf
containers:
  c:
    command: ["sleep", "1000"]
"""))
        pid = sandbox.containers()["c"]["pid"]
        init = _init_status(pid)
        executed = _status_fields(_exec(sandbox, "conf/c", "cat", "/proc/self/status"))
        scores = (Path(f"/proc/{pid}/oom_score_adj").read_text(),
                  _exec(sandbox, "conf/c", "cat", "/proc/self/oom_score_adj"))
    finally:
        own.write_text(before)
    assert {k: executed[k] for k in CONFINEMENT_FIELDS} == {k: init[k] for k in CONFINEMENT_FIELDS}
    assert (int(init["CapBnd"], 16), init["Seccomp"], init["NoNewPrivs"]) == (DOCKER_CAPS, "2", "0")
    assert scores == ("0\n", "0\n")


def test_capability_fields_and_the_writable_layer(sandbox: Sandbox) -> None:
    mark = f"rc-layer-{uuid.uuid4().hex[:12]}"
    _apply(sandbox, sandbox.write("caps.yaml", """\
name: caps
containers:
  nnp:
    command: ["sleep", "1000"]
    security_opt: [no-new-privileges]
  netadmin:
    command: ["sleep", "1000"]
    cap_add: [NET_ADMIN]
    cap_drop: [CHOWN]
  ro:
    command: ["sleep", "1000"]
    read_only: true
  rw:
    command: ["sleep", "1000"]
"""))
    pids = {name: c["pid"] for name, c in sandbox.containers().items()}
    expected = {"nnp": (DOCKER_CAPS, "1"), "rw": (DOCKER_CAPS, "0"),
                "netadmin": ((DOCKER_CAPS | 1 << CAP_NET_ADMIN) & ~(1 << CAP_CHOWN), "0")}
    for name, (caps, no_new_privs) in expected.items():
        init = _init_status(pids[name])
        executed = _status_fields(_exec(sandbox, f"caps/{name}", "cat", "/proc/self/status"))
        assert (int(init["CapBnd"], 16), init["NoNewPrivs"]) == (caps, no_new_privs), name
        assert {k: executed[k] for k in CONFINEMENT_FIELDS} == {k: init[k] for k in CONFINEMENT_FIELDS}, name
    denied = sandbox.reconcile("exec", "caps/ro", "--", "touch", f"/{mark}")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied.stderr
    try:
        _exec(sandbox, "caps/rw", "sh", "-c", f"echo layer > /{mark}")
        assert _exec(sandbox, "caps/rw", "cat", f"/{mark}") == "layer\n"
        assert not Path(f"/{mark}").exists(), "a write to the container's / reached the host's"
    finally:
        Path(f"/{mark}").unlink(missing_ok=True)


def test_exec_is_held_to_the_containers_limits(sandbox: Sandbox) -> None:
    _apply(sandbox, sandbox.write("lim.yaml", """\
name: lim
containers:
  c:
    command: ["sleep", "1000"]
    resources: {memory: 32Mi, pids: 10}
"""))
    allocate = sandbox.reconcile("exec", "lim/c", "--", "/usr/bin/python3", "-c",
                                 "b = b'x' * (100 << 20); print('allocated', len(b))")
    assert allocate.returncode != 0 and "allocated" not in allocate.stdout, allocate
    spawn = sandbox.reconcile("exec", "lim/c", "--", "/usr/bin/python3", "-c", """
import subprocess
children, refused = [], None
for _ in range(20):
    try:
        children.append(subprocess.Popen(["sleep", "30"]))
    except OSError as exc:
        refused = exc.strerror
        break
for child in children:
    child.kill()
print(len(children), refused)
""")
    started, _, refused = spawn.stdout.strip().partition(" ")
    assert int(started) < 20 and refused != "None", spawn


def _processes_with_argv(argv: list[str]) -> list[int]:
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == wanted:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _cgroups(pid: int) -> dict[str, str]:
    """The process's cgroup in each hierarchy that holds the container's limits: v1's memory and
    pids hierarchies, or v2's one tree (its line names no controller)."""
    controllers = ("",) if V2 else ("memory", "pids")
    rows = (line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    return {c: path for _, names, path in rows for c in names.split(",") if c in controllers}


def test_exec_dies_with_a_killed_cli(sandbox: Sandbox) -> None:
    _apply(sandbox, sandbox.write("cli.yaml", """\
name: cli
containers:
  c:
    command: ["sleep", "1000"]
"""))
    init_pid = sandbox.containers()["c"]["pid"]
    argv = ["sleep", f"{time.time() % 1000 + 1000:.3f}"]
    cli = subprocess.Popen(["nsenter", "-t", str(sandbox.pid), "-n", "-m", "--",
                            sys.executable, "-m", "reconcile", "exec", "cli/c", "--", *argv],
                           env=sandbox.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + scaled(15)
        while not (running := _processes_with_argv(argv)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(running) == 1, f"the exec'd {argv} did not start: {running}"
        assert _cgroups(init_pid), "the container's cgroups are not found"
        assert _cgroups(running[0]) == _cgroups(init_pid), "exec runs outside the container's cgroups"
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        deadline = time.monotonic() + scaled(5)
        while _processes_with_argv(argv) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with_argv(argv) == [], "the exec'd process outlived the killed CLI"
    finally:
        cli.kill()
        for pid in _processes_with_argv(argv):
            os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_container_reports_137(sandbox: Sandbox) -> None:
    _apply(sandbox, sandbox.write("kill.yaml", """\
name: kill
containers:
  c:
    command: ["sleep", "1000"]
    restart: "no"
"""))
    os.kill(sandbox.containers()["c"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + scaled(10)
    while (row := sandbox.containers()["c"])["state"] != "exited" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (row["state"], row["exit_code"]) == ("exited", 137), row
    log = sandbox.reconcile("logs", "kill/c").stdout
    assert "sigprocmask" not in log, log
