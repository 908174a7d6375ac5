"""The agent's health prober: every running container with a health check is probed on its
schedule (reconcile.engine.health), each probe on a thread of its own, so a slow probe holds
up neither other probes nor the worker's repairs. Health goes to the container's health record
(for `status`) and to the metrics; a probe that judges a container (healthy, unhealthy) is
told to the agent, so that a start held on it is looked at again. A container that turns
unhealthy with `restart_on_unhealthy: true` is stopped, as a Kubernetes liveness probe has it
killed: its restart policy (with the crash-loop backoff) then starts it again, or keeps it down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from controllers.container import Paths, stop_signal_of
from kernel import runtime
from reconcile.engine import health, probes
from reconcile.engine.containers import Found
from reconcile.engine.settings import Settings
from reconcile.watch.actionlog import ActionLog
from reconcile.watch.metrics import Metrics
from specs.model import Container
from state import health as records
from state.lock import exclusive
from state.store import ContainerRecord, Store

TICK = 0.25
"""Seconds between looks at which probes are due (probe intervals are 1 ms at the finest, but
a process per probe makes anything below this pointless)."""

Target = tuple[str, str]  # (stack, container)


class Prober:
    def __init__(self, settings: Settings, metrics: Metrics, log: ActionLog, stop: threading.Event,
                 waiting: Callable[[str], None], judged: Callable[[str, str], None] = lambda stack, name: None) -> None:
        """`waiting`: told who holds the state dir's lock when a stop waits for it (the agent
        logs it as JSON: its stderr is one JSON object a line). `judged`: told (stack,
        container) after a probe that leaves the container healthy or unhealthy, what a start
        held on its depends_on condition waits for (called on the probe's thread)."""
        self._settings = settings
        self._waiting = waiting
        self._judged = judged
        self._metrics = metrics
        self._log = log
        self._stop = stop
        self._targets: Mapping[Target, Container] = {}
        self._busy: set[Target] = set()  # probing now
        self._lock = threading.Lock()

    def follow(self, targets: Mapping[Target, Container]) -> None:
        """The containers to probe from now on (the worker's view of the specs)."""
        with self._lock:
            gone = set(self._targets) - set(targets)
            self._targets = dict(targets)
        for target in gone:
            self._metrics.forget_health(*target)

    def run(self) -> None:
        while not self._stop.wait(TICK):
            with self._lock:
                targets = {t: c for t, c in self._targets.items() if t not in self._busy}
            if not targets:
                continue
            store = Store.open_readonly(self._settings.state_dir)
            try:
                running = {key: record for key, record in store.containers().items() if key in targets}
            finally:
                store.close()
            for target, container in targets.items():
                record = running.get(target)
                if record is None or not runtime.is_running(runtime.ProcessHandle(record.pid, record.start_time)):
                    self._metrics.clear_health(*target)  # none while it does not run, as status shows it
                elif self._due(target, record, container):
                    with self._lock:
                        self._busy.add(target)
                    threading.Thread(target=self._probe, args=(target, record, container),
                                     name=f"probe {'/'.join(target)}", daemon=True).start()

    def _due(self, target: Target, record: ContainerRecord, container: Container) -> bool:
        assert container.healthcheck is not None
        known = records.load(Paths.of(self._settings.state_dir, *target).health)
        current = known if known is not None and known.of(record.pid, record.start_time) else None
        return health.probe_due(current, record.started_at, container.healthcheck) <= time.time()

    def _probe(self, target: Target, record: ContainerRecord, container: Container) -> None:
        assert container.healthcheck is not None
        found = Found(record, Paths.of(self._settings.state_dir, *target))
        try:
            result = probes.probe(self._settings, found, container.healthcheck)
            self._metrics.record_health(*target, result.status, result.last is not None and result.last.exit_code == 0)
            if result.status == records.UNHEALTHY and container.restart_on_unhealthy:
                self._stop_unhealthy(found, container)
            if result.status in (records.HEALTHY, records.UNHEALTHY):
                self._judged(*target)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot be recorded must not kill the prober
            if not (isinstance(exc, FileNotFoundError) and not found.paths.root.is_dir()):  # else removed meanwhile
                self._log.emit("error", kind="health", container="/".join(target),
                               error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._busy.discard(target)

    def _stop_unhealthy(self, found: Found, container: Container) -> None:
        """Under the state dir's lock, so no reconcile is starting or recreating it meanwhile;
        only the very process found unhealthy, and only while it still is."""
        with exclusive(self._settings.state_dir, self._waiting):
            known = probes.current_health(found)
            if known is None or known.status != records.UNHEALTHY or not runtime.is_running(found.handle):
                return
            assert found.record is not None and known.last is not None
            self._log.emit("unhealthy", container=f"{found.record.stack}/{found.record.container}",
                           action="stopping", restart=container.restart, probe=health.describe_probe(known.last))
            runtime.stop(found.handle, container.stop_grace, found.paths.log,
                         signum=stop_signal_of(found.record.spec))
