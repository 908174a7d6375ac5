"""Docker's health rules, pure: what a probe's result makes of a container's health, when the
next probe is due, and what a probe runs. The probing itself is reconcile.engine.probes.

As Docker: a probe that exits 0 makes the container healthy and clears the failing streak; any
other result (a timeout too) adds to the streak, and `retries` in a row make it unhealthy,
except that before the first success within `start_period` of the start failures do not count.
Within the start period, until the first success, probes come every `start_interval`, else
every `interval`; the first one an interval after the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone

from specs.health import go_duration
from specs.model import Healthcheck
from state.health import HEALTHY, KEPT_PROBES, STARTING, UNHEALTHY, Health, Probe

SHELL = ("/bin/sh", "-c")
"""What CMD-SHELL runs its command line with (Docker's default shell), whatever the image's
SHELL: Docker's probe runs the line with the container's own Config.Shell, which it never takes
from the image (daemon/commit.go merges no Shell) and which neither `docker run` nor Compose sets."""

NO_EXIT_CODE = -1
"""The exit code Docker records for a probe without one of its own: it timed out, or it could
not be run at all (the program missing or not executable, the container gone)."""
SHOWN_OUTPUT = 200
"""Characters of a probe's output in one-line messages (status text, start errors)."""


def judge(previous: Health | None, pid: int, start_time: int, started_at: float, probe: Probe,
          check: Healthcheck) -> Health:
    """The health after `probe` of the process (pid, start_time) started at `started_at` (wall
    clock); a record of another process counts for nothing."""
    base = previous if previous is not None and previous.of(pid, start_time) else Health(
        pid, start_time, STARTING, 0, ())
    probes = (*base.probes, probe)[-KEPT_PROBES:]
    if probe.exit_code == 0:
        return Health(pid, start_time, HEALTHY, 0, probes)
    if base.status == STARTING and probe.started_at - started_at < check.start_period:
        return replace(base, probes=probes)
    streak = base.failing_streak + 1
    return Health(pid, start_time, UNHEALTHY if streak >= check.retries else base.status, streak, probes)


def probe_due(health: Health | None, started_at: float, check: Healthcheck) -> float:
    """When the next probe is due (wall clock): a delay after the last one, or after the start.
    `health` is the record of the running process (None: not probed yet)."""
    since = health.last.ended_at if health is not None and health.last is not None else started_at
    status = health.status if health is not None else STARTING
    in_start_period = since - started_at < check.start_period
    return since + (check.start_interval if in_start_period and status == STARTING else check.interval)


def probe_argv(check: Healthcheck) -> list[str]:
    assert check.test is not None and check.test[0] in ("CMD", "CMD-SHELL")
    return list(check.test[1:]) if check.test[0] == "CMD" else [*SHELL, *check.test[1:]]


def probe_outcome(check: Healthcheck, exit_code: int | None, output: bytes,
                  start_errors: Sequence[str]) -> tuple[int, str]:
    """The exit code and output Docker records of a probe that ran `exit_code` (None: killed
    at its timeout) with `output`, or that the runtime could not start (`start_errors`, its
    errors). As Docker: out of time, -1 and its words; not started (the program missing or not
    executable), -1 and the runtime's error, as Docker records an exec that failed to start
    (not a shell's 127 or 126, nor crun's 255, which would pass for the program's own).
    Either way a failure, which counts toward `retries`."""
    if exit_code is None:
        return NO_EXIT_CODE, f"Health check exceeded timeout ({go_duration(check.timeout)})"
    if start_errors:
        return NO_EXIT_CODE, "\n".join(start_errors)
    return exit_code, output.decode(errors="replace")


def describe_probe(probe: Probe) -> str:
    """One line: how the probe ended, when, and the start of its output."""
    when = datetime.fromtimestamp(probe.ended_at, timezone.utc).isoformat(timespec="seconds")
    shown = one_line(probe.output)
    return f"last probe {when}: exit {probe.exit_code}" + (f": {shown}" if shown else "")


def one_line(output: str) -> str:
    """A probe's output in a one-line message: whitespace runs as one space, cut short."""
    text = " ".join(output.split())
    return text if len(text) <= SHOWN_OUTPUT else text[:SHOWN_OUTPUT - 3] + "..."
