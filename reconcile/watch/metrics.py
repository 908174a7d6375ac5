"""Prometheus metrics of the agent, with the official client library, when they are served
(--metrics-addr). Unserved, nothing is counted and the library is not even imported: it brings
http.server, ssl and OpenSSL along, ~3.5 MiB of the agent's resident memory."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from state.health import HEALTHY, STARTING, UNHEALTHY

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

HEALTH_STATUSES = (STARTING, HEALTHY, UNHEALTHY)


class Unserved:
    """An instrument of metrics no one can read: every call does nothing."""

    def labels(self, *values: str) -> Unserved:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def remove(self, *values: str) -> None:
        pass


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], served: bool) -> None:
        """`served`: whether serve() will be called (else every instrument is Unserved)."""
        self.registry: CollectorRegistry | None = None
        self.reconcile_seconds: Histogram | Unserved = Unserved()
        self.changes: Counter | Unserved = Unserved()
        self.repairs: Counter | Unserved = Unserved()
        self.errors: Counter | Unserved = Unserved()
        self.health: Gauge | Unserved = Unserved()
        self.probes: Counter | Unserved = Unserved()
        if served:
            self._register(queue_depth)

    def _register(self, queue_depth: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "reconcile_duration_seconds", "Time to reconcile one key (observe, diff, apply).",
            ["result"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.changes = Counter("reconcile_changes_total", "Changes applied, by resource kind and action.",
                               ["kind", "action"], registry=registry)
        self.repairs = Counter("reconcile_repairs_total",
                               "Changes that repaired drift (made on a kernel event or a resync), by kind.",
                               ["kind"], registry=registry)
        self.errors = Counter("reconcile_errors_total", "Failed reconciles, by kind (spec, transient).",
                              ["kind"], registry=registry)
        self.health = Gauge("reconcile_container_health",
                            "1 for a probed container's health status (starting, healthy, unhealthy), else 0.",
                            ["stack", "container", "status"], registry=registry)
        self.probes = Counter("reconcile_health_probes_total", "Health probes run, by result (success, failure).",
                              ["stack", "container", "result"], registry=registry)
        depth = Gauge("reconcile_queue_depth", "Keys waiting in the work queue.", registry=registry)
        depth.set_function(queue_depth)

    def record_health(self, stack: str, container: str, status: str, passed: bool) -> None:
        for known in HEALTH_STATUSES:
            self.health.labels(stack, container, known).set(1 if known == status else 0)
        self.probes.labels(stack, container, "success" if passed else "failure").inc()

    def clear_health(self, stack: str, container: str) -> None:
        """A container that does not run has no health (its probes' counts stay)."""
        for known in HEALTH_STATUSES:
            with suppress(KeyError):
                self.health.remove(stack, container, known)

    def forget_health(self, stack: str, container: str) -> None:
        """A container no longer probed leaves no stale series behind."""
        self.clear_health(stack, container)
        for result in ("success", "failure"):
            with suppress(KeyError):
                self.probes.remove(stack, container, result)

    def serve(self, address: str) -> None:
        """address: "HOST:PORT" or ":PORT" (all interfaces). ValueError names the address: the
        socket's own error (EADDRINUSE) does not."""
        from prometheus_client import start_http_server

        assert self.registry is not None, "serve() of metrics made with served=False"
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--metrics-addr {address!r}: expected HOST:PORT or :PORT")
        try:
            start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        except OSError as exc:
            raise ValueError(f"--metrics-addr {address!r}: {exc.strerror or exc}") from None
