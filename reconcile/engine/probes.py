"""Running health probes inside a container (as `reconcile exec` runs a command: the
container's user, capabilities, seccomp filter and cgroups, never more), recording them
(state.health), and waiting on depends_on conditions before a start in `apply`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from controllers.container import Paths, Wait
from kernel import runtime
from reconcile.engine import health
from reconcile.engine.containers import Found, UnknownContainer, exec_command, find
from reconcile.engine.settings import Settings
from specs.model import Healthcheck
from state import health as records
from state.health import Health, Probe

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
        with exec_command(settings, found, health.probe_argv(check)) as (command, pid_file, _):
            captured = runtime.run_captured(command, pid_file, check.timeout, OUTPUT_LIMIT)
        code = health.TIMED_OUT if captured.exit_code is None else captured.exit_code
        output = (health.timeout_output(check) if captured.exit_code is None
                  else captured.output.decode(errors="replace"))
    except UnknownContainer as exc:  # raced with an exit, or the runtime's state is lost
        code, output = health.TIMED_OUT, str(exc)
    result = Probe(started, time.time(), code, output)
    record = found.record
    return records.update(found.paths.health, lambda previous: health.judge(
        previous, record.pid, record.start_time, record.started_at, result, check))


def current_health(found: Found) -> Health | None:
    """The health record of the process running now (None: none, or one of an earlier run)."""
    assert found.record is not None
    recorded = records.load(found.paths.health)
    return recorded if recorded is not None and recorded.of(found.record.pid, found.record.start_time) else None


@dataclass(frozen=True)
class Gate:
    """controllers.container.Gate for `apply`: waits for every condition of a start within one
    timeout (Settings.depends_timeout); a dependency with `required: false` that fails is let be."""

    settings: Settings

    def __call__(self, stack: str, waits: Sequence[Wait]) -> None:
        deadline = time.monotonic() + self.settings.depends_timeout
        for wait in waits:
            try:
                if wait.condition == "service_healthy":
                    self._healthy(stack, wait, deadline)
                else:
                    self._completed(stack, wait, deadline)
            except DependencyFailed:
                if wait.required:
                    raise

    def _running(self, stack: str, wait: Wait) -> Found | None:
        """The dependency with its record, while its process runs; None once it does not."""
        try:
            found = find(self.settings, f"{stack}/{wait.dependency}", recorded=True)
        except UnknownContainer:
            return None
        return found if runtime.is_running(found.handle) else None

    def _healthy(self, stack: str, wait: Wait, deadline: float) -> None:
        """Probe the dependency on its schedule (or read what another prober, the agent,
        recorded) until it is healthy."""
        check = wait.healthcheck
        assert check is not None
        while True:
            found = self._running(stack, wait)
            if found is None:
                raise DependencyFailed(self._not_running(stack, wait))
            assert found.record is not None
            known = current_health(found)
            if known is not None and known.status == records.HEALTHY:
                return
            if known is not None and known.status == records.UNHEALTHY:
                raise DependencyFailed(f"dependency '{wait.dependency}' is unhealthy; {_last(known)}")
            due = health.probe_due(known, found.record.started_at, check)
            if time.monotonic() + max(0.0, due - time.time()) > deadline:
                raise DependencyFailed(f"dependency '{wait.dependency}' is not healthy after "
                                       f"{self.settings.depends_timeout:g}s (RECONCILE_DEPENDS_TIMEOUT); "
                                       f"{_last(known)}")
            if due <= time.time():
                probe(self.settings, found, check)
            else:
                time.sleep(min(POLL, due - time.time()))

    def _completed(self, stack: str, wait: Wait, deadline: float) -> None:
        """Until the dependency has exited: 0 passes, anything else fails."""
        paths = Paths.of(self.settings.state_dir, stack, wait.dependency)
        while self._running(stack, wait) is not None:
            if time.monotonic() > deadline:
                raise DependencyFailed(f"dependency '{wait.dependency}' has not completed after "
                                       f"{self.settings.depends_timeout:g}s (RECONCILE_DEPENDS_TIMEOUT)")
            time.sleep(POLL)
        code = runtime.await_exit_code(paths.log)  # its process is gone: the status comes a moment later
        if code != 0:
            raise DependencyFailed(self._not_running(stack, wait) if code is None else
                                   f"dependency '{wait.dependency}' did not complete successfully: "
                                   f"it exited with code {code}")

    def _not_running(self, stack: str, wait: Wait) -> str:
        paths = Paths.of(self.settings.state_dir, stack, wait.dependency)
        error = paths.last_start_error()
        code = runtime.exit_code(paths.log)
        why = f"it did not start: {error}" if error else f"it exited with code {code}" if code is not None else ""
        return f"dependency '{wait.dependency}' is not running" + (f": {why}" if why else "")


def _last(known: Health | None) -> str:
    return health.describe_probe(known.last) if known is not None and known.last is not None else "no probe yet"
