"""Running the agent as a service: checks before starting, signals, file-descriptor headroom,
the metrics endpoint."""

from __future__ import annotations

import resource
import signal
import sys
from types import FrameType

from reconcile.engine.settings import Settings
from reconcile.watch.actionlog import ActionLog
from reconcile.watch.agent import Agent, WatchOptions


def _raise_fd_limit() -> None:
    """A socket per sandbox namespace and a pidfd per container: 1,000 containers need more
    than the usual soft limit of 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(settings: Settings, options: WatchOptions, metrics_addr: str | None) -> int:
    if not options.directory.is_dir():
        print(f"error: {options.directory}: not a directory", file=sys.stderr)
        return 1
    _raise_fd_limit()
    agent = Agent(settings, options, ActionLog())
    if metrics_addr:
        try:
            agent.metrics.serve(metrics_addr)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    def stop(signum: int, _frame: FrameType | None) -> None:
        agent.log.emit("signal", name=signal.Signals(signum).name)
        agent.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0
