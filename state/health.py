"""A container's health: its last probes and what they add up to, in a small JSON file beside its
log (controllers.container.Paths.health), so that whichever `reconcile` probes (the watch agent,
an `apply` waiting on service_healthy), any other (`status`) reads it.

The kernel stays the source of truth for whether the container runs: a record names the process
it was probed in (pid and start time), and one for another process is no record at all. Writes
are atomic (a temporary file renamed over it) and serialised by an flock, so two prober
processes cannot lose each other's probe.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"

KEPT_PROBES = 5
"""Docker keeps the last five results in a container's health log."""


@dataclass(frozen=True)
class Probe:
    started_at: float  # wall clock, seconds
    ended_at: float
    exit_code: int  # -1: timed out, or could not run at all (Docker's code for both)
    output: str


@dataclass(frozen=True)
class Health:
    pid: int  # the process these probes ran in
    start_time: int
    status: str  # starting | healthy | unhealthy
    failing_streak: int
    probes: tuple[Probe, ...]  # newest last

    @property
    def last(self) -> Probe | None:
        return self.probes[-1] if self.probes else None

    def of(self, pid: int, start_time: int) -> bool:
        return (self.pid, self.start_time) == (pid, start_time)


def load(path: Path) -> Health | None:
    """The record, or None when there is none or it is unreadable (a probe writes a new one)."""
    try:
        data = json.loads(path.read_text())
        return Health(data["pid"], data["start_time"], data["status"], data["failing_streak"],
                      tuple(Probe(**probe) for probe in data["probes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def update(path: Path, change: Callable[[Health | None], Health]) -> Health:
    """Read, change and write the record under an exclusive lock; the file is replaced whole.
    Its directory is the container's, made by its start: gone (the container removed while a
    probe ran), this raises FileNotFoundError rather than leave a directory of a container
    that no longer exists."""
    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        health = change(load(path))
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(asdict(health)))
        os.replace(partial, path)
        return health
    finally:
        os.close(lock)  # releases the lock
