"""depends_on conditions judged, pure: what one look at a dependency (its process, its health
record, its exit status) says of a start waiting on it, at a given moment and with so much of
the wait left. How long to wait, and whether to wait at all, is the gate's (reconcile.engine.probes):
`apply` blocks on a pending condition, the watch agent holds the start and comes back later.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.container import Wait
from reconcile.engine import health
from state import health as records
from state.health import Health

TIMEOUT_SETTING = "RECONCILE_DEPENDS_TIMEOUT"


@dataclass(frozen=True)
class Dependency:
    """One look at a dependency of a start."""

    running: bool
    started_at: float | None = None  # wall clock: when its running process started
    health: Health | None = None  # the health record of its running process (None: not probed yet)
    exit_code: int | None = None  # of its last run, once ended (None: no status, or still running)
    start_error: str | None = None  # why its last start failed
    ran: bool = False  # a run of it ever began here (its log directory exists)


@dataclass(frozen=True)
class Met:
    """The condition holds: the start may go ahead."""


@dataclass(frozen=True)
class Failed:
    """The condition cannot be met any more (or not within the wait): the start fails with this."""

    message: str


@dataclass(frozen=True)
class Pending:
    """Not met yet, and it still may be."""

    reason: str  # what the start waits for, e.g. "waits for db to be healthy"
    probe_due: float | None = None  # wall clock: when its next probe is due (service_healthy, running)


Verdict = Met | Failed | Pending


def met_by_start_order(wait: Wait) -> bool:
    """`service_started`: met once the dependency has started, which start order sees to (a
    one-shot that has run and exited counts as started, as in Compose), so no look at the
    dependency is needed; what may hold it back is a gate's (the agent's holds it with its
    dependency's held start)."""
    return wait.condition == "service_started"


def judge(wait: Wait, dependency: Dependency, now: float, remaining: float, timeout: float,
          unstarted_pending: bool = False) -> Verdict:
    """The verdict on `wait` (one not met_by_start_order) at `now` (wall clock), `remaining`
    seconds before the wait's end (`timeout` seconds after it began). `unstarted_pending`: a
    dependency that has never run here, nor failed to start, may still be started (the agent
    holds a start whose dependency is itself held); `apply` starts dependencies first, so
    there it is not running."""
    if not dependency.running:
        if unstarted_pending and not dependency.ran and dependency.start_error is None:
            if remaining <= 0:
                return Failed(_timed_out(wait, timeout, None))
            return Pending(f"waits for {wait.dependency} to start")
        if wait.condition == "service_completed_successfully" and dependency.exit_code is not None:
            if dependency.exit_code == 0:
                return Met()
            return Failed(f"dependency '{wait.dependency}' did not complete successfully: "
                          f"it exited with code {dependency.exit_code}")
        return Failed(not_running(wait.dependency, dependency))
    if wait.condition == "service_completed_successfully":
        if remaining < 0:
            return Failed(_timed_out(wait, timeout, None))
        return Pending(f"waits for {wait.dependency} to complete successfully")
    known = dependency.health
    if known is not None and known.status == records.HEALTHY:
        return Met()
    if known is not None and known.status == records.UNHEALTHY:
        return Failed(f"dependency '{wait.dependency}' is unhealthy; {last_probe(known)}")
    assert wait.healthcheck is not None and dependency.started_at is not None
    due = health.probe_due(known, dependency.started_at, wait.healthcheck)
    if max(0.0, due - now) > remaining:  # its next probe comes too late to count
        return Failed(_timed_out(wait, timeout, known))
    return Pending(f"waits for {wait.dependency} to be healthy", due)


def not_running(name: str, dependency: Dependency) -> str:
    why = (f"it did not start: {dependency.start_error}" if dependency.start_error else
           f"it exited with code {dependency.exit_code}" if dependency.exit_code is not None else "")
    return f"dependency '{name}' is not running" + (f": {why}" if why else "")


def last_probe(known: Health | None) -> str:
    return health.describe_probe(known.last) if known is not None and known.last is not None else "no probe yet"


def _timed_out(wait: Wait, timeout: float, known: Health | None) -> str:
    if wait.condition == "service_completed_successfully":
        return f"dependency '{wait.dependency}' has not completed after {timeout:g}s ({TIMEOUT_SETTING})"
    return f"dependency '{wait.dependency}' is not healthy after {timeout:g}s ({TIMEOUT_SETTING}); {last_probe(known)}"
