"""The start protocol around the OCI runtime (kernel.runtime.launching and Launch.run), with
real processes: a stand-in for crun's `run` that writes its pid file as crun does, so what is
checked is our plumbing (the waiting shell, its exit file, the caller's children), not the
runtime."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel import runtime
from kernel.oci import Runtime
from tests.waiting import eventually

LIMITS = runtime.LogLimits(max_bytes=1 << 20, max_files=2)


@dataclass(frozen=True)
class ScriptedRuntime(Runtime):
    """`run` is a shell script given the pid file as $0."""
    script: str = ""

    def run_command(self, container_id: str, bundle: Path, pid_file: Path) -> list[str]:
        return ["sh", "-c", self.script, str(pid_file)]


def _start(fake: Runtime, tmp_path: Path) -> runtime.ProcessHandle:
    with runtime.launching(fake, "rc-web", tmp_path / "bundle", tmp_path / "log", "web", [], LIMITS) as launch:
        return launch.run({})


def _children() -> list[int]:
    tasks = os.listdir("/proc/self/task")
    return [int(pid) for task in tasks for pid in Path(f"/proc/self/task/{task}/children").read_text().split()]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[runtime.ProcessHandle, Path]]:
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script='echo $$ > "$0"; echo up; exec sleep 60')
    (tmp_path / "bundle").mkdir()
    handle = _start(fake, tmp_path)
    yield handle, tmp_path / "log"
    runtime.terminate(handle, 1.0)


def test_a_start_leaves_the_caller_no_child(tmp_path: Path) -> None:
    """The waiting shell is not the caller's child: Python's subprocess would otherwise keep a
    Popen for each and poll every one of them before each later spawn."""
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script='echo $$ > "$0"; exec sleep 60')
    (tmp_path / "bundle").mkdir()
    before = set(_children())
    handle = _start(fake, tmp_path)
    try:
        assert runtime.is_running(handle)
        assert set(_children()) == before
    finally:
        runtime.terminate(handle, 1.0)


@pytest.mark.parametrize("record", ["1 1", "1"], ids=["another start's", "an older release's"])
def test_the_late_exit_file_of_the_run_before_does_not_end_a_start(tmp_path: Path, record: str) -> None:
    """A container restarted at once: its old waiting shell may write its exit file (another
    process group's, or one without a group) after the new start removed it, while the runtime
    is still creating the container. That start goes on."""
    late = f'echo "{record}" > "{runtime.exit_file(tmp_path / "log")}"; sleep 0.1; echo $$ > "$0"; exec sleep 60'
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script=late)
    (tmp_path / "bundle").mkdir()
    handle = _start(fake, tmp_path)
    try:
        assert runtime.is_running(handle)
    finally:
        runtime.terminate(handle, 1.0)


def test_the_waiting_shell_records_the_exit_and_the_log(started: tuple[runtime.ProcessHandle, Path]) -> None:
    handle, log_dir = started
    os.kill(handle.pid, signal.SIGKILL)
    assert eventually(lambda: runtime.exit_code(log_dir) or 0, 137) == 137
    assert runtime.log_files(log_dir)[-1].read_text().startswith("up\n")  # the shell adds "Killed"


def test_a_runtime_that_fails_reports_its_words_and_status(tmp_path: Path) -> None:
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script="echo 'no such image' >&2; exit 3")
    (tmp_path / "bundle").mkdir()
    with pytest.raises(runtime.StartError, match=r"^web: no such image$"):
        _start(fake, tmp_path)
    assert runtime.exit_code(tmp_path / "log") == 3


def test_a_start_whose_processes_are_all_killed_fails_with_that(tmp_path: Path) -> None:
    """No exit file will come when the waiting shell is killed with the runtime: the start's
    process group being gone says so (not the start's timeout)."""
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script="kill -KILL 0")
    (tmp_path / "bundle").mkdir()
    with pytest.raises(runtime.StartError, match=r"^web: the waiting shell is gone without an exit status$"):
        _start(fake, tmp_path)


def test_the_runtimes_files_are_written_for_root_alone(tmp_path: Path) -> None:
    """config.json and an exec's process file hold the container's environment (secrets)."""
    config = {"process": {"env": ["TOKEN=secret"], "args": ["sleep", "1"]}, "annotations": {"a": "é"}}
    path = tmp_path / "config.json"
    runtime.write_private_json(path, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and json.loads(path.read_text()) == config


def test_the_waiting_shell_joins_its_cgroups_while_the_bundle_is_made_ready(tmp_path: Path) -> None:
    """A move into a cgroup waits for an RCU grace period (5-15 ms): the shell makes it while
    the caller mounts the root and writes the bundle, and starts nothing before it is told."""
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script='echo $$ > "$0"; exec sleep 60')
    (tmp_path / "bundle").mkdir()
    procs = tmp_path / "cgroup.procs"  # a file stands for the cgroup
    with runtime.launching(fake, "rc-web", tmp_path / "bundle", tmp_path / "log", "web", [str(procs)],
                           LIMITS) as launch:
        assert eventually(lambda: procs.exists() and procs.read_text(), "0\n") == "0\n"
        time.sleep(0.2)  # time enough for a shell that did not wait to be seen
        assert not (tmp_path / "bundle" / runtime.PID_FILE).exists() and runtime.log_files(tmp_path / "log") == []
        handle = launch.run({})
    try:
        assert runtime.is_running(handle)
        assert json.loads((tmp_path / "bundle" / runtime.CONFIG_FILE).read_text()) == {}
    finally:
        runtime.terminate(handle, 1.0)


def test_a_start_given_up_before_its_runtime_leaves_the_run_before_as_it_was(tmp_path: Path) -> None:
    """The root could not be made ready (a command not found in it): the waiting shell, already
    in its cgroups, ends without running the runtime, a log writer or an exit file, and the run
    before's exit status and log stay as they were (`status` still shows how it ended)."""
    ran = tmp_path / "ran"
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script=f'touch "{ran}"; echo $$ > "$0"; exec sleep 60')
    (tmp_path / "bundle").mkdir()
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / runtime.LOG_FILE).write_text("the run before\n")
    runtime.exit_file(log_dir).write_text("137 1\n")
    procs = tmp_path / "cgroup.procs"
    with pytest.raises(runtime.StartError, match="^given up$"):
        with runtime.launching(fake, "rc-web", tmp_path / "bundle", log_dir, "web", [str(procs)], LIMITS) as launch:
            eventually(procs.exists, True)
            raise runtime.StartError("given up")

    assert eventually(lambda: runtime._group_alive(launch.group), False) is False
    assert not ran.exists() and runtime.exit_code(log_dir) == 137
    assert sorted(p.name for p in log_dir.iterdir()) == [runtime.LOG_FILE]
    assert (log_dir / runtime.LOG_FILE).read_text() == "the run before\n"


def test_a_waiting_shell_killed_before_the_word_fails_its_start_with_that(tmp_path: Path) -> None:
    """Saying the word to a shell already gone (a pipe without a reader) is not the start's
    error: its process group being gone is, as for a shell killed with the runtime."""
    fake = ScriptedRuntime(tmp_path / "runtime", hybrid=False, script='echo $$ > "$0"; exec sleep 60')
    (tmp_path / "bundle").mkdir()
    with runtime.launching(fake, "rc-web", tmp_path / "bundle", tmp_path / "log", "web", [], LIMITS) as launch:
        os.killpg(launch.group, signal.SIGKILL)
        eventually(lambda: runtime._group_alive(launch.group), False)
        with pytest.raises(runtime.StartError, match=r"^web: the waiting shell is gone without an exit status$"):
            launch.run({})
