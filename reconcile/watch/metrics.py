"""Prometheus metrics of the agent, with the official client library. Always collected (a
private registry costs next to nothing); served only when --metrics-addr is given."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from state.health import HEALTHY, STARTING, UNHEALTHY

HEALTH_STATUSES = (STARTING, HEALTHY, UNHEALTHY)


class Metrics:
    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "reconcile_duration_seconds", "Time to reconcile one key (observe, diff, apply).",
            ["result"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.changes = Counter("reconcile_changes_total", "Changes applied, by resource kind and action.",
                               ["kind", "action"], registry=self.registry)
        self.repairs = Counter("reconcile_repairs_total",
                               "Changes that repaired drift (made on a kernel event or a resync), by kind.",
                               ["kind"], registry=self.registry)
        self.errors = Counter("reconcile_errors_total", "Failed reconciles, by kind (spec, transient).",
                              ["kind"], registry=self.registry)
        self.health = Gauge("reconcile_container_health",
                            "1 for a probed container's health status (starting, healthy, unhealthy), else 0.",
                            ["stack", "container", "status"], registry=self.registry)
        self.probes = Counter("reconcile_health_probes_total", "Health probes run, by result (success, failure).",
                              ["stack", "container", "result"], registry=self.registry)
        depth = Gauge("reconcile_queue_depth", "Keys waiting in the work queue.", registry=self.registry)
        depth.set_function(queue_depth)

    def record_health(self, stack: str, container: str, status: str, passed: bool) -> None:
        for known in HEALTH_STATUSES:
            self.health.labels(stack, container, known).set(1 if known == status else 0)
        self.probes.labels(stack, container, "success" if passed else "failure").inc()

    def forget_health(self, stack: str, container: str) -> None:
        """A container no longer probed leaves no stale series behind."""
        for known in HEALTH_STATUSES:
            with suppress(KeyError):
                self.health.remove(stack, container, known)
        for result in ("success", "failure"):
            with suppress(KeyError):
                self.probes.remove(stack, container, result)

    def serve(self, address: str) -> None:
        """address: "HOST:PORT" or ":PORT" (all interfaces). ValueError names the address: the
        socket's own error (EADDRINUSE) does not."""
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--metrics-addr {address!r}: expected HOST:PORT or :PORT")
        try:
            start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        except OSError as exc:
            raise ValueError(f"--metrics-addr {address!r}: {exc.strerror or exc}") from None
