"""A start's wait for a dependency to complete (reconcile.engine.probes.Gate): once the
dependency's process is gone, its exit status is written a moment later (the runtime cleans up
after the process, then the waiting shell drains the log writer), longer on a busy host. The
gate waits for it: a dependency that exited 3 is reported as having exited 3, not as not
running. Files only: the process is taken as gone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from controllers.container import Paths, Wait
from kernel import runtime
from reconcile.engine.probes import DependencyFailed, Gate
from reconcile.engine.settings import Settings

LATE = 0.3  # seconds after the process is gone that the exit file comes


def _exits_late(log_dir: Path, text: str) -> threading.Thread:
    log_dir.mkdir(parents=True)
    timer = threading.Timer(LATE, runtime.exit_file(log_dir).write_text, [text])
    timer.start()
    return timer


@pytest.mark.parametrize(("status", "failure"), [
    ("3 1234\n", "dependency 'init' did not complete successfully: it exited with code 3"),
    ("0 1234\n", None),
])
def test_a_completed_dependency_is_judged_by_its_exit_status_written_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str, failure: str | None) -> None:
    monkeypatch.setattr(Gate, "_running", lambda self, stack, wait: None)  # its process is gone
    gate = Gate(Settings(state_dir=tmp_path, cgroup_parent="rc-test"))
    timer = _exits_late(Paths.of(tmp_path, "s", "init").log, status)
    wait = Wait("init", "service_completed_successfully", required=True, healthcheck=None)
    try:
        if failure is None:
            gate("s", [wait])
        else:
            with pytest.raises(DependencyFailed, match=failure):
                gate("s", [wait])
    finally:
        timer.join()


def test_a_dependency_that_never_writes_a_status_is_not_running(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Its waiting shell killed too: after EXIT_WAIT, reported as not running."""
    monkeypatch.setattr(Gate, "_running", lambda self, stack, wait: None)
    monkeypatch.setattr(runtime, "EXIT_WAIT", 0.2)
    gate = Gate(Settings(state_dir=tmp_path, cgroup_parent="rc-test"))
    wait = Wait("init", "service_completed_successfully", required=True, healthcheck=None)
    with pytest.raises(DependencyFailed, match="^dependency 'init' is not running$"):
        gate("s", [wait])
