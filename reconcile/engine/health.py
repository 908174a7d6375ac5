"""Docker's health rules, pure: what a probe's result makes of a container's health, when the
next probe is due, and what a probe runs. The probing itself is reconcile.engine.probes.

As Docker: a probe that exits 0 makes the container healthy and clears the failing streak; any
other result (a timeout too) adds to the streak, and `retries` in a row make it unhealthy,
except that before the first success within `start_period` of the start failures do not count.
Within the start period, until the first success, probes come every `start_interval`, else
every `interval`; the first one an interval after the start.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from specs.health import format_duration
from specs.model import Healthcheck
from state.health import HEALTHY, KEPT_PROBES, STARTING, UNHEALTHY, Health, Probe

SHELL = ("/bin/sh", "-c")
"""What CMD-SHELL runs its command line with (Docker's default shell)."""

TIMED_OUT = -1
"""The exit code Docker records for a probe that timed out or could not run."""
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


def timeout_output(check: Healthcheck) -> str:
    """Docker's words for a probe that ran out of time."""
    return f"Health check exceeded timeout ({format_duration(check.timeout)})"


def describe_probe(probe: Probe) -> str:
    """One line: how the probe ended, when, and the start of its output."""
    when = datetime.fromtimestamp(probe.ended_at, timezone.utc).isoformat(timespec="seconds")
    shown = one_line(probe.output)
    return f"last probe {when}: exit {probe.exit_code}" + (f": {shown}" if shown else "")


def one_line(output: str) -> str:
    """A probe's output in a one-line message: whitespace runs as one space, cut short."""
    text = " ".join(output.split())
    return text if len(text) <= SHOWN_OUTPUT else text[:SHOWN_OUTPUT - 3] + "..."
