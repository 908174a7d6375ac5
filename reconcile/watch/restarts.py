"""Restart policies and the crash-loop backoff, as Kubernetes' kubelet does them: the first
restart after a stable run is immediate; a container that keeps dying young waits 10 s, then
20 s, 40 s ... up to 5 min; a run that lasts `stable` seconds forgives the past. Pure: times
come in as arguments."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    initial: float = 10.0
    cap: float = 300.0
    stable: float = 60.0


@dataclass(frozen=True)
class Exit:
    """A container found exited: which run of it (its start time) and how it ended."""

    container: str  # "stack/name"
    policy: str  # always | on-failure | no
    started_at: float
    exit_code: int | None  # None: unknown (killed before the wrapper could record it)
    exited_at: float | None = None  # None: unknown; the moment it is noticed stands in


@dataclass
class CrashLoop:
    backoff: Backoff = field(default_factory=Backoff)
    _next_delay: dict[str, float] = field(default_factory=dict)
    _decided: dict[tuple[str, float], float] = field(default_factory=dict)

    def restart_at(self, exit_: Exit, now: float) -> float | None:
        """When this exited run may be restarted (now or later), or None: its policy says it
        stays down. Asked again about the same run, the answer is the same."""
        if exit_.policy == "no" or (exit_.policy == "on-failure" and exit_.exit_code == 0):
            return None
        run = (exit_.container, exit_.started_at)
        if run not in self._decided:
            self._decided = {k: v for k, v in self._decided.items() if k[0] != exit_.container}
            ran = (exit_.exited_at or now) - exit_.started_at  # noticed late, a crash is still a crash
            if ran >= self.backoff.stable or exit_.container not in self._next_delay:
                delay = 0.0
                self._next_delay[exit_.container] = self.backoff.initial
            else:
                delay = self._next_delay[exit_.container]
                self._next_delay[exit_.container] = min(delay * 2, self.backoff.cap)
            self._decided[run] = now + delay
        return self._decided[run]

    def forget_stack(self, stack: str) -> None:
        """The stack left the directory: a stack of that name later starts with a clean slate."""
        prefix = f"{stack}/"
        self._forget(lambda container: container.startswith(prefix))

    def forget(self, containers: Collection[str]) -> None:
        """These containers ("stack/name") left their stack's spec or were given another: each
        starts with a clean slate, as a new pod does in Kubernetes (the crash-looping container
        whose spec was fixed, or that was taken out and put back, is not held by its old
        backoff)."""
        self._forget(set(containers).__contains__)

    def _forget(self, gone: Callable[[str], bool]) -> None:
        self._next_delay = {k: v for k, v in self._next_delay.items() if not gone(k)}
        self._decided = {k: v for k, v in self._decided.items() if not gone(k[0])}
