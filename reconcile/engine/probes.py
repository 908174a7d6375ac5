"""Running health probes inside a container (as `reconcile exec` runs a command: the
container's user, capabilities, seccomp filter and cgroups, never more), recording them
(state.health), and the gates of depends_on conditions before a start: `apply`'s waits for
them, the watch agent's holds the start (reconcile.engine.conditions judges them)."""

from __future__ import annotations

import threading
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from controllers.container import INTERRUPTED, Paths, Wait
from controllers.errors import Held
from kernel import oci, runtime
from reconcile.engine import conditions, health
from reconcile.engine.containers import Found, UnknownContainer, exec_command
from reconcile.engine.settings import Settings
from specs.model import Healthcheck
from state import health as records
from state.health import Health, Probe
from state.store import Store

OUTPUT_LIMIT = 4096
"""Bytes of a probe's output kept, as Docker keeps them."""
POLL = 0.1
"""Seconds between looks at a dependency (its process, its exit file, its health record)."""


class DependencyFailed(Exception):
    """A dependency did not meet its condition: the dependent is not started."""


def probe(settings: Settings, found: Found, check: Healthcheck) -> Health:
    """Run one probe in the running container `found` and record its result."""
    assert found.record is not None
    started = time.time()
    try:
        with exec_command(settings, found, health.probe_argv(check)) as (command, pid_file, log_file):
            captured = runtime.run_captured(command, pid_file, check.timeout, OUTPUT_LIMIT)
            start_errors = [] if captured.exit_code is None else oci.exec_start_errors(captured.exit_code, log_file)
        code, output = health.probe_outcome(check, captured.exit_code, captured.output, start_errors)
    except UnknownContainer as exc:  # raced with an exit, or the runtime's state is lost
        code, output = health.NO_EXIT_CODE, str(exc)
    result = Probe(started, time.time(), code, output)
    record = found.record
    return records.update(found.paths.health, lambda previous: health.judge(
        previous, record.pid, record.start_time, record.started_at, result, check))


def current_health(found: Found) -> Health | None:
    """The health record of the process running now (None: none, or one of an earlier run)."""
    assert found.record is not None
    recorded = records.load(found.paths.health)
    return recorded if recorded is not None and recorded.of(found.record.pid, found.record.start_time) else None


def observe(settings: Settings, stack: str, wait: Wait, exit_wait: bool = True
            ) -> tuple[conditions.Dependency, Found | None]:
    """One look at a dependency, with what a probe of it needs (its record, while it runs): its
    own record and files, nothing else of the host. A run whose process is gone has its exit
    status written a moment later (the runtime cleans up after it, then the waiting shell
    drains the log writer): for a completion, it is waited for, unless not `exit_wait` (a gate
    that never waits: the status not there yet is the condition not met yet)."""
    found = _running(settings, stack, wait.dependency)
    if found is not None:
        assert found.record is not None
        return conditions.Dependency(True, found.record.started_at, current_health(found)), found
    paths = Paths.of(settings.state_dir, stack, wait.dependency)
    ran = paths.log.exists()
    awaited = exit_wait and ran and wait.condition == "service_completed_successfully"
    code = runtime.await_exit_code(paths.log) if awaited else runtime.exit_code(paths.log)
    return conditions.Dependency(False, exit_code=code, start_error=paths.last_start_error(), ran=ran), None


def _running(settings: Settings, stack: str, name: str) -> Found | None:
    """The dependency with its record, while its process runs; None once it does not (or it
    has no record: a lost store's, which the pass recording it comes before)."""
    store = Store.open_readonly(settings.state_dir)
    try:
        record = store.containers([(stack, name)]).get((stack, name))
    finally:
        store.close()
    if record is None:
        return None
    found = Found(record, Paths.of(settings.state_dir, stack, name))
    return found if runtime.is_running(found.handle) else None


@dataclass(frozen=True)
class Gate:
    """controllers.container.Gate for `apply`: waits for every condition of a start within one
    timeout (Settings.depends_timeout), probing a dependency when its probe is due (or reading
    what another prober, the agent, recorded); a dependency with `required: false` that fails
    is let be."""

    settings: Settings

    def __call__(self, stack: str, container: str, waits: Sequence[Wait], interrupted: threading.Event) -> None:
        deadline = time.monotonic() + self.settings.depends_timeout
        for wait in waits:
            while not conditions.met_by_start_order(wait):
                dependency, found = observe(self.settings, stack, wait)
                verdict = conditions.judge(wait, dependency, time.time(), deadline - time.monotonic(),
                                           self.settings.depends_timeout)
                if isinstance(verdict, conditions.Met):
                    break
                if isinstance(verdict, conditions.Failed):
                    if wait.required:
                        raise DependencyFailed(verdict.message)
                    break
                due = verdict.probe_due
                if found is not None and wait.healthcheck is not None and due is not None and due <= time.time():
                    probe(self.settings, found, wait.healthcheck)
                elif interrupted.wait(POLL if due is None else max(0.0, min(POLL, due - time.time()))):
                    raise Held(INTERRUPTED)


@dataclass(frozen=True)
class HoldingGate:
    """controllers.container.Gate for the watch agent: one look at each condition, never a
    wait. A condition not met yet holds the start (controllers.errors.Held: it is neither made
    nor failed, and the agent comes back to it), so one start waiting on a dependency does not
    stall every other repair behind it. The wait is still bounded: its timeout
    (Settings.depends_timeout) counts from when the start was first held, kept in `began`
    (time.monotonic(), by "stack/container") across the agent's passes until the start is
    made; past it, or once a dependency has failed for good, the start fails as `apply`'s would
    (and a retry fails alike until the condition is met: the wait is not begun again). It never
    probes: the agent's prober does, on its schedule."""

    settings: Settings
    began: MutableMapping[str, float]

    def __call__(self, stack: str, container: str, waits: Sequence[Wait], interrupted: threading.Event) -> None:
        name = f"{stack}/{container}"
        began = self.began.setdefault(name, time.monotonic())
        remaining = began + self.settings.depends_timeout - time.monotonic()
        pending: list[tuple[Wait, conditions.Pending]] = []
        for wait in waits:
            if wait.required and f"{stack}/{wait.dependency}" in self.began:  # its own start is held
                pending.append((wait, conditions.Pending(f"waits for {wait.dependency} to start")))
                continue
            if conditions.met_by_start_order(wait):
                continue
            dependency, _ = observe(self.settings, stack, wait, exit_wait=False)
            verdict = conditions.judge(wait, dependency, time.time(), remaining, self.settings.depends_timeout,
                                       unstarted_pending=True)
            if isinstance(verdict, conditions.Failed) and wait.required:
                raise DependencyFailed(verdict.message)
            if isinstance(verdict, conditions.Pending):
                pending.append((wait, verdict))
        if pending:
            raise Held("; ".join(verdict.reason for _, verdict in pending),
                       [wait.dependency for wait, _ in pending], remaining)
        self.began.pop(name, None)
