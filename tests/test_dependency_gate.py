"""depends_on conditions: the verdict on one look at a dependency (reconcile.engine.conditions,
a table), the watch agent's gate that holds a start rather than wait (probes.HoldingGate), and
`apply`'s gate waiting for a dependency to complete (probes.Gate): once the dependency's process
is gone, its exit status is written a moment later (the runtime cleans up after the process,
then the waiting shell drains the log writer), longer on a busy host. The gate waits for it: a
dependency that exited 3 is reported as having exited 3, not as not running. Files only: the
process is taken as gone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from controllers.container import Paths, Wait
from controllers.errors import Held
from kernel import runtime
from reconcile.engine import probes
from reconcile.engine.conditions import Dependency, Failed, Met, Pending, Verdict, judge
from reconcile.engine.probes import DependencyFailed, Gate, HoldingGate
from reconcile.engine.settings import Settings
from specs.model import Healthcheck
from state.health import HEALTHY, STARTING, UNHEALTHY, Health, Probe

NOW = 1_000_000.0
STARTED = NOW - 2  # the dependency's process, two seconds ago
CHECK = Healthcheck.model_validate({"test": ["CMD", "true"], "interval": "1m", "start_period": "30s",
                                   "start_interval": "1s"})
HEALTHY_DB = Wait("db", "service_healthy", required=True, healthcheck=CHECK)
COMPLETED_INIT = Wait("init", "service_completed_successfully", required=True, healthcheck=None)


def _health(status: str, probed_at: float = NOW - 0.5, code: int = 1) -> Health:
    return Health(1, 1, status, 0, (Probe(probed_at - 0.1, probed_at, code, "not yet\n"),))


LAST = "last probe 1970-01-12T13:46:39+00:00: exit 1: not yet"
WAITING_ON_DB = Pending("waits for db to be healthy", NOW + 0.5)  # a start_interval after its last probe


@pytest.mark.parametrize(("wait", "dependency", "remaining", "verdict"), [
    # service_healthy, its process running
    (HEALTHY_DB, Dependency(True, STARTED, _health(HEALTHY, code=0)), 10, Met()),
    (HEALTHY_DB, Dependency(True, STARTED, _health(STARTING)), 10, WAITING_ON_DB),
    (HEALTHY_DB, Dependency(True, STARTED, None), 10, Pending("waits for db to be healthy", STARTED + 1)),
    (HEALTHY_DB, Dependency(True, STARTED, _health(UNHEALTHY)), 10, Failed(f"dependency 'db' is unhealthy; {LAST}")),
    (HEALTHY_DB, Dependency(True, STARTED, _health(STARTING)), 0.5, WAITING_ON_DB),  # its probe comes in time
    (HEALTHY_DB, Dependency(True, STARTED, _health(STARTING)), 0.4,  # its next probe comes too late
     Failed(f"dependency 'db' is not healthy after 300s (RECONCILE_DEPENDS_TIMEOUT); {LAST}")),
    # service_healthy, not running
    (HEALTHY_DB, Dependency(False, exit_code=137, ran=True), 10,
     Failed("dependency 'db' is not running: it exited with code 137")),
    (HEALTHY_DB, Dependency(False, start_error="no such image", ran=False), 10,
     Failed("dependency 'db' is not running: it did not start: no such image")),
    (HEALTHY_DB, Dependency(False), 10, Failed("dependency 'db' is not running")),  # apply: started before
    # service_completed_successfully
    (COMPLETED_INIT, Dependency(True, STARTED), 10, Pending("waits for init to complete successfully")),
    (COMPLETED_INIT, Dependency(True, STARTED), -0.1,
     Failed("dependency 'init' has not completed after 300s (RECONCILE_DEPENDS_TIMEOUT)")),
    (COMPLETED_INIT, Dependency(False, exit_code=0, ran=True), 10, Met()),
    (COMPLETED_INIT, Dependency(False, exit_code=0, ran=True), -5, Met()),  # done: the time left is moot
    (COMPLETED_INIT, Dependency(False, exit_code=3, ran=True), 10,
     Failed("dependency 'init' did not complete successfully: it exited with code 3")),
    (COMPLETED_INIT, Dependency(False, ran=True), 10, Failed("dependency 'init' is not running")),
])
def test_a_condition_is_judged_from_one_look_at_its_dependency(wait: Wait, dependency: Dependency, remaining: float,
                                                               verdict: Verdict) -> None:
    assert judge(wait, dependency, NOW, remaining, 300) == verdict
    if dependency.ran or dependency.running or dependency.start_error:  # the agent's verdict is the same
        assert judge(wait, dependency, NOW, remaining, 300, unstarted_pending=True) == verdict


@pytest.mark.parametrize(("wait", "remaining", "verdict"), [
    (HEALTHY_DB, 10, Pending("waits for db to start")),
    (COMPLETED_INIT, 10, Pending("waits for init to start")),
    (HEALTHY_DB, 0, Failed("dependency 'db' is not healthy after 300s (RECONCILE_DEPENDS_TIMEOUT); no probe yet")),
    (COMPLETED_INIT, 0, Failed("dependency 'init' has not completed after 300s (RECONCILE_DEPENDS_TIMEOUT)")),
])
def test_to_the_agent_a_dependency_never_started_may_still_start(wait: Wait, remaining: float,
                                                                verdict: Verdict) -> None:
    """Its own start may be held (on a dependency of its own): the agent holds the start on it
    until the wait's end; `apply` started it before, so there it is not running."""
    assert judge(wait, Dependency(False), NOW, remaining, 300, unstarted_pending=True) == verdict


def test_the_agents_gate_holds_a_start_and_counts_its_wait_from_the_first_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One look, never a wait: held while db is starting (its wait kept across passes), failed
    as apply fails once the wait is over, started once db is healthy (its wait forgotten)."""
    seen = {"db": Dependency(True, time.time() - 2, None)}
    monkeypatch.setattr(probes, "observe", lambda settings, stack, wait, exit_wait: (seen[wait.dependency], None))
    began: dict[str, float] = {}
    gate = HoldingGate(Settings(state_dir=tmp_path, cgroup_parent="rc-test", depends_timeout=300), began)

    with pytest.raises(Held) as held:
        gate("s", "web", [HEALTHY_DB], threading.Event())
    assert (held.value.reason, held.value.dependencies) == ("waits for db to be healthy", ("db",))
    assert 299 < held.value.remaining <= 300 and set(began) == {"s/web"}

    began["s/web"] -= 301  # the next pass, after the wait's end: failed, and failed again until met
    for _ in range(2):
        with pytest.raises(DependencyFailed, match="^dependency 'db' is not healthy after 300s "):
            gate("s", "web", [HEALTHY_DB], threading.Event())

    seen["db"] = Dependency(True, time.time() - 2, _health(HEALTHY, code=0))
    gate("s", "web", [HEALTHY_DB], threading.Event())
    assert began == {}


def test_the_agents_gate_fails_at_once_on_a_required_dependency_and_lets_an_optional_one_be(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed condition is reported even while another is pending (it cannot start anyway);
    one with required: false that failed holds nothing back."""
    seen = {"db": Dependency(True, time.time() - 2, None), "init": Dependency(False, exit_code=3, ran=True)}
    monkeypatch.setattr(probes, "observe", lambda settings, stack, wait, exit_wait: (seen[wait.dependency], None))
    gate = HoldingGate(Settings(state_dir=tmp_path, cgroup_parent="rc-test"), {})
    with pytest.raises(DependencyFailed, match="^dependency 'init' did not complete successfully"):
        gate("s", "web", [HEALTHY_DB, COMPLETED_INIT], threading.Event())
    optional = Wait("init", "service_completed_successfully", required=False, healthcheck=None)
    with pytest.raises(Held, match="^waits for db to be healthy$"):
        gate("s", "web", [HEALTHY_DB, optional], threading.Event())

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
    monkeypatch.setattr(probes, "_running", lambda settings, stack, name: None)  # its process is gone
    gate = Gate(Settings(state_dir=tmp_path, cgroup_parent="rc-test"))
    timer = _exits_late(Paths.of(tmp_path, "s", "init").log, status)
    wait = Wait("init", "service_completed_successfully", required=True, healthcheck=None)
    try:
        if failure is None:
            gate("s", "web", [wait], threading.Event())
        else:
            with pytest.raises(DependencyFailed, match=failure):
                gate("s", "web", [wait], threading.Event())
    finally:
        timer.join()


def test_a_dependency_that_never_writes_a_status_is_not_running(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Its waiting shell killed too: after EXIT_WAIT, reported as not running."""
    monkeypatch.setattr(probes, "_running", lambda settings, stack, name: None)
    monkeypatch.setattr(runtime, "EXIT_WAIT", 0.2)
    gate = Gate(Settings(state_dir=tmp_path, cgroup_parent="rc-test"))
    wait = Wait("init", "service_completed_successfully", required=True, healthcheck=None)
    with pytest.raises(DependencyFailed, match="^dependency 'init' is not running$"):
        gate("s", "web", [wait], threading.Event())


def test_an_interrupted_wait_holds_the_start_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a start waits on a dependency (the apply's starts run in threads): the wait
    ends at once, and the start is held, neither made nor failed, instead of waiting out the
    dependency and starting anyway."""
    init = Dependency(True, time.time() - 2)  # running, for as long as the test lasts
    monkeypatch.setattr(probes, "observe", lambda settings, stack, wait, *_: (init, None))
    gate = Gate(Settings(state_dir=tmp_path, cgroup_parent="rc-test", depends_timeout=300))
    interrupted = threading.Event()
    threading.Timer(0.3, interrupted.set).start()
    started = time.monotonic()
    with pytest.raises(Held, match="^interrupted$"):
        gate("s", "web", [COMPLETED_INIT], interrupted)
    assert time.monotonic() - started < 5  # not the dependency's 300 s
