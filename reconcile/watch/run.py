"""Running the agent as a service: checks before starting, signals, file-descriptor headroom,
the metrics endpoint."""

from __future__ import annotations

import os
import resource
import signal
import sys
from types import FrameType

from kernel.memory import agent_allocator, forget_preload, installed_jemalloc, use_one_heap
from reconcile.engine.settings import Settings
from reconcile.watch.actionlog import ActionLog
from reconcile.watch.agent import Agent, WatchOptions
from state import lock


class AgentError(Exception):
    """The agent cannot start (no directory, metrics address unusable): the CLI prints it, exit 1."""


def _raise_fd_limit() -> None:
    """A socket per sandbox namespace and a pidfd per container: 1,000 containers need more
    than the usual soft limit of 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _use_lean_allocator() -> None:
    """Re-execute once on the C library's malloc, jemalloc where the host has it (kernel/memory.py
    says why), unless the user chose an allocator (PYTHONMALLOC set); once re-executed, keep the
    preload from the processes the agent starts."""
    if "PYTHONMALLOC" not in os.environ:
        # -P: the package from where it is installed, never a specs.py or kernel/ of the working
        # directory (a GitOps checkout) that `-m` would put first on the path.
        os.execve(sys.executable, [sys.executable, "-P", "-m", "reconcile", *sys.argv[1:]],
                  {**os.environ, **agent_allocator(os.environ, installed_jemalloc())})
    forget_preload(os.environ)


def run(settings: Settings, options: WatchOptions) -> int:
    """0 once stopped by SIGTERM/SIGINT; 1 when a producer died (the service manager restarts
    the agent); AgentError before starting."""
    if not options.directory.is_dir():
        raise AgentError(f"{options.directory}: not a directory")
    _use_lean_allocator()
    use_one_heap()
    _raise_fd_limit()
    agent = Agent(settings, options, ActionLog())
    if options.metrics_addr is not None:
        try:
            agent.metrics.serve(options.metrics_addr)
        except ValueError as exc:
            raise AgentError(str(exc)) from None

    def stop(signum: int, _frame: FrameType | None) -> None:
        agent.stopped_by = signal.Signals(signum).name
        agent.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with lock.shared(settings.state_dir, lambda holder: None, name=lock.AGENT_LOCK_NAME):  # status: one runs
        agent.run()
    return 0 if agent.failure is None else 1
