"""The watch agent: three producers feed one work queue, one worker drains it.

- the directory (watchfiles, debounced): a changed file re-reads that file; its stack is queued;
- the kernel (netlink link/address/route in the host and every sandbox, nf_tables rule
  events, container exits by pidfd): each event is mapped to the one key it concerns;
- a timer: every `resync` seconds, everything, for what raises no event (a cgroup file).

The worker reconciles one key at a time under the state dir's lock (so a manual `reconcile
apply` interleaves safely), in a fresh session each time: the kernel is re-read on every pass.
The directory's producer is a DirectoryWatch (reconcile/watch/dirwatch.py); what `reconcile
status` shows of the agent is written by a StatusWriter (reconcile/watch/status.py); retry
delays are the queue's (reconcile/watch/queue.py).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from controllers.base import Focus
from controllers.change import Action, Change
from controllers.container import DesiredContainer, ObservedContainer, Paths
from controllers.container_files import RenderedLines
from controllers.errors import Held
from controllers.firewall import nft_changes
from controllers.proxy import running_proxies
from kernel import netns, runtime
from kernel.events import Event, KernelEvents
from kernel.memory import release_free_memory
from kernel.retrying import retry_transient
from kernel.rtnl_wire import DumpInterrupted
from reconcile.engine import pinning, probes
from reconcile.engine.addresses import HeldAddresses
from reconcile.engine.session import HostDrivers, Target, open_session
from reconcile.engine.settings import Settings
from reconcile.watch.actionlog import ActionLog
from reconcile.watch.collection import CycleCollector
from reconcile.watch.dirwatch import DirectoryWatch
from reconcile.watch.keys import (
    HOST,
    HOST_KEY,
    Key,
    concerns,
    container_key,
    covers,
    key_of_change,
    key_of_event,
    stack_key,
)
from reconcile.watch.metrics import Metrics
from reconcile.watch.prober import Prober
from reconcile.watch.pulls import ChildPulls
from reconcile.watch.queue import RETRY_CAP, WorkQueue
from reconcile.watch.restarts import Backoff, CrashLoop, Exit
from reconcile.watch.stackdir import StackDir, renewed
from reconcile.watch.status import StatusWriter
from specs.errors import SpecErrors
from specs.images import ImageReference
from specs.loader import StackFile
from specs.model import Container, Stack
from specs.names import netns_name
from state.lock import exclusive
from state.store import LeaseCache, Store

FILES_KEY = Key(HOST, "files")
"""Re-read the directory files that changed (the worker owns the specs: no lock needed)."""

REPAIR_TRIGGERS = ("kernel:", "resync", "restart backoff")
"""Why a key was queued, when the changes it makes are repairs of drift."""

RIDERS = 64
"""Due keys whose changes a reconcile carries along with its own: a flushed chain of 1,000
rules raises 1,000 events for 1,000 keys, repaired in 16 passes rather than 1,000."""

HOLD_SLACK = 0.05
"""Seconds past the end of a held start's wait that it is looked at again (then it fails)."""

PULL_RETRY = 10.0
"""Seconds before a failed image pull is tried again (the stacks using it are queued again)."""
_TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ENOBUFS, errno.EINTR})


def _transient(exc: BaseException) -> bool:
    """Kernel hiccups worth an immediate retry: an interrupted dump, a busy cgroup."""
    return isinstance(exc, DumpInterrupted) or (isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS)


_retried = retry_transient(_transient, attempts=3, first_wait=0.02, max_wait=0.02)
"""A reconcile that hit one: tried again at once, then once more 20 ms later."""


@dataclass(frozen=True)
class WatchOptions:
    directory: Path
    prune: bool = True
    resync: float = 30.0
    debounce_ms: int = 100
    backoff: Backoff = field(default_factory=Backoff)
    metrics_addr: str | None = None
    """Where Prometheus metrics are served ([HOST]:PORT); None: not counted at all."""


@dataclass
class _Outcome:
    changed: set[str]  # the stacks it made a change to
    held: dict[Key, tuple[float, str]]  # restarts held back: seconds to wait, why
    riders: list[Key]  # other keys whose changes came along
    focus: Focus | None  # what the passes observed and changed, when not everything
    whys: dict[Key, str]  # why each rider was queued: the reason of the changes made for it
    whole: set[str]  # the stacks it reconciled whole (a stack's own key, or the host's, among its keys)
    gated: dict[Key, Held]  # starts held back: a dependency's condition not met yet


class Agent:
    def __init__(self, settings: Settings, options: WatchOptions, log: ActionLog) -> None:
        self.settings = settings
        self.options = options
        self.log = log
        self.queue: WorkQueue[Key] = WorkQueue()
        self.metrics = Metrics(self.queue.depth, served=options.metrics_addr is not None)
        self.crashloop = CrashLoop(options.backoff)
        self.stop = threading.Event()
        self.stopped_by: str | None = None  # set by the signal handler (which must not log: locks)
        self.failure: str | None = None  # why a producer died, which stopped the agent
        self._errors: dict[Key, str] = {}  # keys whose last reconcile failed
        self._drivers: HostDrivers | None = None  # the last whole pass's, for focused ones
        self._leases = LeaseCache()  # every session's: read again only once written
        self._rendered = RenderedLines()  # every session's /etc/hosts lines: rendered again once changed
        self._addresses = HeldAddresses()  # every session's: a repair decides its own addresses only
        self._held: dict[Key, str] = {}  # restarts waiting out a crash-loop delay
        self._gated: dict[Key, Held] = {}
        """Starts held until a dependency meets its condition. Replaced, never changed in place:
        the prober's thread reads it (_dependency_probed)."""
        self._waits_began: dict[str, float] = {}  # by "stack/container": when its held start's wait began
        self._pruning: set[str] = set()
        self._dirty_files: set[Path] | None = None  # None: every file
        self._files_lock = threading.Lock()
        self._processes: dict[tuple[int, int], Key] = {}  # (pid, start time) watched for its exit
        self._pids: dict[int, Key] = {}
        self._pulling: set[str] = set()  # references being pulled in the background
        self._pulling_lock = threading.Lock()
        self._pull_slots = threading.BoundedSemaphore(pinning.PARALLEL_PULLS)
        """Pull processes at once, as an apply's pass fetches: the others wait their turn."""
        self.pulls = ChildPulls(settings)
        self._probed: dict[str, dict[str, Container]] = {}
        """By stack, its containers with a health check as the last pass that resolved it found
        them (an image's HEALTHCHECK is known once the image is pinned): what the prober follows
        (a stack no pass has resolved yet, its file's own checks)."""
        self.store = Store.open(settings.state_dir, warn=self._store_damaged)
        root = options.directory.absolute()  # not resolved: a flipped symlink is followed
        self.specs = StackDir(root, owners={r.name: Path(r.source) for r in self.store.stacks()
                                            if Path(r.source).parent == root})
        self.status = StatusWriter(self.store)
        self.nft_changes = nft_changes()  # our table's notifications, for the firewall's kept read
        self.events = KernelEvents(self._on_event, self.nft_changes)
        self.files = DirectoryWatch(root, options.debounce_ms, self.specs.is_stack_file, self._files_changed, log,
                                    self.stop)
        self.prober = Prober(settings, self.metrics, log, self.stop, self._waiting_for_lock, self._dependency_probed)
        self.cycles = CycleCollector()

    # -- producers --------------------------------------------------------------------------

    def enqueue(self, key: Key, why: str, delay: float = 0.0, observable: bool = True) -> None:
        """`observable=False`: queued for something no observation of the kernel shows (an
        image pulled), which a pass that observed after it has not done."""
        self.queue.add(key, delay, why, observable)  # the first reason stands until the key is worked on

    def _on_event(self, event: Event) -> None:
        key = key_of_event(event, self._pids)
        if key is not None:
            self.enqueue(key, f"kernel: {event}")

    def _files_changed(self, paths: set[Path] | None, why: str) -> None:
        with self._files_lock:
            if paths is None or self._dirty_files is None:
                self._dirty_files = None
            else:
                self._dirty_files |= set(paths)
        self.enqueue(FILES_KEY, why)

    def _guarded(self, produce: Callable[[], None]) -> None:
        """A producer that dies would leave the agent deaf to files or the kernel while it
        looks healthy: log it and stop, so the service manager restarts the agent."""
        try:
            produce()
        except Exception as exc:  # noqa: BLE001
            self.failure = f"{threading.current_thread().name}: {type(exc).__name__}: {exc}"
            self.log.emit("error", kind="agent", error=self.failure, action="stopping")
            self.stop.set()

    def _resync_timer(self) -> None:
        while not self.stop.wait(self.options.resync):
            self._files_changed(None, "resync")
            self.enqueue(HOST_KEY, "resync")

    # -- the worker -------------------------------------------------------------------------

    def run(self) -> None:
        """Until `stop` is set (SIGTERM/SIGINT); the workloads stay as they are."""
        self._refresh_files("start")
        self._adopt_store()
        self.enqueue(HOST_KEY, "start")
        producers = [threading.Thread(target=self._guarded, args=(work,), name=name, daemon=True)
                     for name, work in (("files", self.files.run), ("kernel", lambda: self.events.run(self.stop)),
                                        ("resync", self._resync_timer), ("health", self.prober.run))]
        for thread in producers:
            thread.start()
        self.log.emit("agent started", directory=str(self.specs.root), stacks=sorted(self.specs.stacks()),
                      prune=self.options.prune, resync_s=self.options.resync)
        try:
            while not self.stop.is_set():
                key = self.queue.get(timeout=0.25)
                if key is not None:
                    try:
                        self._work(key)
                    except Exception as exc:  # noqa: BLE001 - bookkeeping failed (store locked, fds)
                        self.log.emit("error", key=str(key), kind="agent", error=f"{type(exc).__name__}: {exc}")
                        self.enqueue(key, "retry after an agent error", RETRY_CAP)
                    finally:
                        self.queue.done(key)
                        self.cycles.between_keys(busy=bool(self.queue.due(1)))
                        self.store.release_cache()
                        release_free_memory()
        finally:
            self.pulls.stop()
            self.queue.close()
            self.events.close()
            self.store.close()
            self.log.emit("agent stopped", signal=self.stopped_by, workloads="left running")

    def _store_damaged(self, text: str) -> None:
        self.log.emit("store replaced", why=text)

    def _work(self, key: Key) -> None:
        if self.store.replaced():  # state.db deleted or replaced by hand: ours is the new one
            self.log.emit("store replaced", why=f"{self.settings.state_dir} holds another state store now")
            self.store.reopen(warn=self._store_damaged)
            self.status = StatusWriter(self.store)
        why = self.queue.reason(key)
        if key == FILES_KEY:
            self._refresh_files(why)
            return
        if key.resource and key.stack in self._pruning:
            self.enqueue(stack_key(key.stack), why)  # pruned by its stack's pass alone: all of it
            return
        if key.stack != HOST and key.stack not in self.specs.stacks() and key.stack not in self._pruning:
            return  # not a stack of this directory (applied by hand, or kept by --no-prune)
        started = time.monotonic()
        files = self.specs.stacks()
        riders = [k for k in self.queue.due(RIDERS) if k != FILES_KEY and k.stack in (files.keys() | {HOST})]
        try:
            try:
                outcome = self._reconcile(key, riders, files, why, started)
            except SpecErrors:
                own = [rider for rider in riders if rider.stack == key.stack]
                if own == riders:
                    raise
                # Another stack's spec may be what cannot apply: this key without it (those
                # riders stay queued, each to fail or succeed on its own).
                outcome = self._reconcile(key, own, files, why, started)
        except SpecErrors as exc:
            if key.stack == HOST and len(self._managed()) > 1:
                # One stack's conflict must not stop the host-wide pass for every other stack:
                # each stack is tried on its own (host-wide changes come with any of them).
                for name in sorted(self._managed()):
                    self.enqueue(stack_key(name), why)
                return
            self._failed(key, why, started, "spec", exc, retry=False)
            return
        except Exception as exc:  # noqa: BLE001 - an agent must outlive any one failure
            self._failed(key, why, started, "transient", exc, retry=True)
            return
        self.metrics.reconcile_seconds.labels("ok").observe(time.monotonic() - started)
        for done in (key, *outcome.riders):
            if done not in outcome.gated:  # a held start is looked at again later each time (_settle)
                self.queue.forget(done)
        self._settle(key, outcome)

    def _log_changes(self, batch: Sequence[Change], why: str, whys: Mapping[Key, str], started: float) -> None:
        """A log line per change as soon as it is made, not after the pass that confirms it:
        its time is when the host was repaired (what the drift bench reads); `ms` counts from
        the reconcile's start."""
        ms = round((time.monotonic() - started) * 1000, 1)
        for change in batch:
            changed = key_of_change(change)
            cause = whys.get(changed) or why  # a rider's change has the rider's reason
            self.metrics.changes.labels(change.kind, change.action.value).inc()
            if cause.startswith(REPAIR_TRIGGERS):
                self.metrics.repairs.labels(change.kind).inc()
            self.log.emit("change", key=str(changed), why=cause, action=change.action.value,
                          kind=change.kind, object=change.key, reason=change.reason, ms=ms)

    def _reconcile(self, key: Key, riders: list[Key], files: Mapping[str, StackFile], why: str,
                   started: float) -> _Outcome:
        """`files`: the stacks the riders were chosen among, as the worker read them."""
        keys = [key, *riders]
        whys = {rider: self.queue.reason(rider) for rider in riders}
        scope = self._managed() if any(k.stack == HOST for k in keys) else {k.stack for k in keys}
        whole = {name for name in scope if any(covers(k, stack_key(name)) for k in keys)}
        target = Target({name: f.stack for name, f in files.items()}, frozenset(scope), list(files.values()))
        held: dict[Key, tuple[float, str]] = {}
        # Keys of containers only: each pass observes and diffs those containers and their
        # networks, so a repair costs the same beside ten containers or a thousand.
        containers = [(k.stack, name) for k in keys if (name := k.container()) is not None]
        focus = Focus.on(target.stacks, containers) if len(containers) == len(keys) else None

        def select(change: Change) -> bool:
            if not any(concerns(k, change) for k in keys):
                return False
            desired = change.desired
            if isinstance(desired, DesiredContainer) and pinning.NOT_PULLED in (desired.container.image or ""):
                return False  # started once its image is pulled (_pull queues its stack then)
            exit_ = self._exit_of(change)
            if exit_ is None:
                return True
            now = time.time()
            at = self.crashloop.restart_at(exit_, now)
            if at is None:
                return False  # its restart policy keeps it down
            if at > now:
                held[key_of_change(change)] = (at - now, f"CrashLoopBackOff ({exit_.policy})")
                return False
            return True

        changed: set[str] = set()  # every attempt's: a retried one does not undo what an earlier made

        def made(batch: Sequence[Change]) -> None:
            changed.update(change.stack for change in batch if change.stack is not None)
            self._log_changes(batch, why, whys, started)

        def attempt() -> None:
            held.clear()
            session.converge(resolved, select, focus, made)

        if focus is None or self._drivers is None:
            self._drivers = HostDrivers.detect(self.settings, self.nft_changes, before=self._drivers)
        with exclusive(self.settings.state_dir, self._waiting_for_lock), \
                open_session(self.settings, writable=True, drivers=self._drivers, leases=self._leases,
                             rendered=self._rendered, held_addresses=self._addresses,
                             gate=probes.HoldingGate(self.settings, self._waits_began)) as session, \
                self.cycles.during_pass(focused=focus is not None):
            resolved = pinning.resolve(target, self.settings,
                                      pinning.Pulling(allowed=True, background=self._pull_in_background),
                                      None if focus is None else focus.containers)
            self._note_probed(resolved, focus)
            try:
                _retried(attempt)()
            finally:  # a pass that fails has still found them
                for warning in session.warnings:
                    self.log.emit("host warning", warning=warning)
            gated = {key_of_change(h.change): h for h in session.held if h.change is not None}
            # The events of our own writes, and any drift older than the final observation
            # (which found nothing left to do), need no second pass.
            for dropped in self.queue.drop_stale(lambda other: any(covers(k, other) for k in keys),
                                                 session.observed_at):
                self.queue.forget(dropped)
            # Only a pass over a whole stack applied its spec, or pruned it: a rider's
            # container alone did neither.
            if whole:
                recorded, sources = session.store.spec_texts(), session.store.sources()
                for name in sorted(whole & set(files)):
                    spec, source = files[name].stack.model_dump_json(), str(files[name].path)
                    if recorded.get(name) != spec:
                        session.store.record_stack(name, source, spec)
                    elif sources.get(name) != source:  # the same spec applied by hand from another file
                        session.store.move_stack(name, source)
                for name in sorted(whole & self._pruning):
                    session.store.forget_stack(name)
        return _Outcome(changed, held, riders, focus, whys, whole, gated)

    def _pull_in_background(self, ref: ImageReference) -> None:
        """Pull a missing image on a thread of its own, in a process of its own (pulls.py) under
        the image store's lock only (shared: pulls run side by side): the worker goes on
        repairing other keys; a host-wide pass is queued once it is in (the worker owns the
        specs: this thread does not read which stacks use it)."""
        with self._pulling_lock:
            if str(ref) in self._pulling:
                return
            self._pulling.add(str(ref))
        threading.Thread(target=self._pull, args=(ref,), name=f"pull {ref}", daemon=True).start()

    def _pull(self, ref: ImageReference) -> None:
        delay = 0.0
        try:
            with self._pull_slots:  # said as it starts, once it has one
                started = time.monotonic()
                self.log.emit("pulling", image=str(ref))
                digest = self.pulls.pull(ref, lambda holder: self.log.emit(
                    "waiting", why="an image removal holds the image store's lock", image=str(ref),
                    pid=holder))
            self.log.emit("pulled", image=str(ref), digest=digest, s=round(time.monotonic() - started, 2))
        except Exception as exc:  # noqa: BLE001 - a failed pull is logged and tried again later
            if self.stop.is_set():
                return  # ended with the agent (ChildPulls.stop); the next agent pulls it again
            delay = PULL_RETRY
            self.metrics.errors.labels("image").inc()
            self.log.emit("error", kind="image", image=str(ref), error=str(exc), retry_in_s=delay)
        finally:
            with self._pulling_lock:
                self._pulling.discard(str(ref))
        self.enqueue(HOST_KEY, f"image {'pull failed' if delay else 'pulled'}: {ref}", delay, observable=False)

    def _waiting_for_lock(self, holder: str) -> None:
        """The reconciler and the prober (stopping an unhealthy container) take the lock in turn:
        one waiting on the other is said so, not as another reconcile."""
        why = ("the agent's own reconcile or stop of an unhealthy container holds the state dir's lock"
               if holder == str(os.getpid()) else "another reconcile holds the state dir's lock")
        self.log.emit("waiting", why=why, pid=holder)

    def _exit_of(self, change: Change) -> Exit | None:
        """A restart of a container that ran and exited (not a first start, not a recreate)."""
        found = change.observed
        if change.kind != "container" or change.action is not Action.CREATE:
            return None
        if not isinstance(found, ObservedContainer) or found.record is None:
            return None
        if not isinstance(change.desired, DesiredContainer):
            return None
        recorded = found.spec or {}  # its started file's, or decoded from the store's text: once
        if any(recorded.get(field) != value for field, value in change.desired.spec.items()):
            return None  # the spec changed since that run: start the new one now
        log = Paths.of(self.settings.state_dir, found.stack, found.container).log
        try:
            exited_at: float | None = runtime.exit_file(log).stat().st_mtime
        except FileNotFoundError:
            exited_at = None
        return Exit(f"{found.stack}/{found.container}", change.desired.container.restart,
                    found.record.started_at, runtime.exit_code(log), exited_at)

    def _failed(self, key: Key, why: str, started: float, kind: str, exc: Exception, retry: bool) -> None:
        self.metrics.reconcile_seconds.labels("error").observe(time.monotonic() - started)
        self.metrics.errors.labels(kind).inc()
        message = str(exc) or type(exc).__name__
        self._errors[key] = message
        self._gated = {k: h for k, h in self._gated.items() if not covers(key, k)}  # failed, or failing now
        delay = None
        if retry:  # a spec error waits for the file to change (or the next resync): no spinning
            attempt, delay = self.queue.backoff(key)
            self.enqueue(key, f"retry {attempt}", delay)
        self.log.emit("error", key=str(key), why=why, kind=kind, error=message,
                      retry_in_s=None if delay is None else round(delay, 2))
        self._publish(self._stacks_of(key), applied=False)
        if retry:  # a spec error fails before anything is made
            self._follow_what_a_failed_pass_made()

    def _follow_what_a_failed_pass_made(self) -> None:
        """What a pass made before it failed (a batch's other starts, new sandboxes) is followed
        now, not only once a pass succeeds: a stack whose one start keeps failing retries up to
        a minute apart, and its other containers' exits must not wait for that. All of the
        watches: how far the pass got is not known (failures are rare and rate-limited). Its
        own failure (the store or /proc unreadable now) is logged; the retry renews them."""
        try:
            self._watch_kernel()
        except Exception as exc:  # noqa: BLE001 - the key's own error is the one to retry on
            self.log.emit("error", kind="agent", error=f"renewing the kernel watches: {type(exc).__name__}: {exc}")

    def _settle(self, key: Key, outcome: _Outcome) -> None:
        """Bookkeeping after a good reconcile: what it covered is no longer failing or held,
        except the restarts it held back just now; pruned stacks are gone."""
        keys = [key, *outcome.riders]
        self._errors = {k: e for k, e in self._errors.items() if not any(covers(done, k) for done in keys)}
        self._held = {k: r for k, r in self._held.items() if not any(covers(done, k) for done in keys)}
        for held_key, (delay, reason) in outcome.held.items():
            self._held[held_key] = reason
            self.enqueue(held_key, "restart backoff", delay)
            self.log.emit("restart held", key=str(held_key), reason=reason, wait_s=round(delay, 1))
        self._hold_starts(keys, outcome.gated)
        names = sorted({name for k in keys for name in self._stacks_of(k)})
        for name in [n for n in names if n in self._pruning and n in outcome.whole]:
            self._pruning.discard(name)
            self.status.forget_stack(name)
            self.log.emit("pruned", stack=name)
        for name in [n for n in names if n in self.specs.stacks()]:
            self._publish([name], applied=name in outcome.changed, spec_applied=key.stack != HOST and not key.resource)
        self._watch_kernel(outcome.focus)

    def _hold_starts(self, keys: Sequence[Key], gated: Mapping[Key, Held]) -> None:
        """Starts held on a dependency's condition are looked at again when it could next be met:
        once a probe has judged the dependency (_dependency_probed), once a reconcile has
        looked at the dependency (its start, its exit event), and, failing those, after the
        queue's growing retry delay (never past the end of the wait, when the start fails)."""
        before = self._gated
        kept = {k: h for k, h in before.items() if not any(covers(done, k) for done in keys)}
        for released in before.keys() - kept.keys() - gated.keys():
            self.queue.forget(released)  # started (or no longer wanted): its retry delay starts over
        for held_key, held in gated.items():
            _, delay = self.queue.backoff(held_key)  # not forgotten while held: it grows
            delay = min(delay, max(held.remaining, 0.0) + HOLD_SLACK)
            self.enqueue(held_key, "held start", delay)
            if held_key not in before or before[held_key].reason != held.reason:
                self.log.emit("start held", key=str(held_key), reason=held.reason, retry_in_s=round(delay, 2))
        self._gated = {**kept, **gated}
        for waiter, held in kept.items():
            if any(covers(done, container_key(waiter.stack, name)) for name in held.dependencies for done in keys):
                self.enqueue(waiter, "dependency reconciled")

    def _dependency_probed(self, stack: str, container: str) -> None:
        """On the prober's thread: a probe has found the container healthy or unhealthy, which
        meets or fails the condition of any start held on it."""
        for waiter, held in self._gated.items():  # a dict the worker replaces, never changes
            if waiter.stack == stack and container in held.dependencies:
                self.enqueue(waiter, f"dependency probed: {stack}/{container}")

    def _forget_waits(self, stack: str) -> None:
        """A new spec of the stack (or none): a start held in it begins its wait anew."""
        self._waits_began = {k: v for k, v in self._waits_began.items() if not k.startswith(f"{stack}/")}

    # -- specs, status and what the kernel watch follows ----------------------------------

    def _refresh_files(self, why: str) -> None:
        with self._files_lock:
            dirty, self._dirty_files = self._dirty_files, set()
        before = self.specs.stacks()
        result = self.specs.refresh(dirty)
        for path, errors in result.errors.items():
            message = "\n".join(str(e) for e in errors)
            self.log.emit("spec invalid", file=str(path), why=why, error=message,
                          kept="last good spec" if path in self.specs.good else "nothing applied")
            self._write_file_status(path, message)
        stacks = self.specs.stacks()
        for name in sorted(result.changed):
            self._pruning.discard(name)
            for warning in stacks[name].warnings:  # as the plan of `apply` shows them
                self.log.emit("spec warning", stack=name, warning=str(warning))
            if name in before:
                self.crashloop.forget(renewed(before[name].stack, stacks[name].stack))
            self._forget_waits(name)
            self.enqueue(stack_key(name), "spec changed")
        for name, path in sorted(result.moved.items()):
            self._stack_moved(name, path)
        for name in sorted(result.removed):
            self._stack_removed(name)
        self.status.forget_invalid_files(self.specs.errors.keys())
        self._publish(sorted(set(stacks) - result.changed), applied=False)

    def _stack_moved(self, name: str, path: Path) -> None:
        """Another file defines a running stack now (a rename, a copy then a delete): nothing
        restarts; the store and `status` follow it to that file, with its last apply."""
        self.store.move_stack(name, str(path))
        self.status.stack_moved(name, path)
        self.log.emit("stack moved", stack=name, file=str(path))

    def _stack_removed(self, name: str) -> None:
        self.crashloop.forget_stack(name)
        self._forget_waits(name)
        self._probed.pop(name, None)
        if not self.options.prune:
            self.log.emit("stack kept", stack=name, why="its file is gone; --no-prune")
            self.status.forget_stack(name)
            return
        self._pruning.add(name)
        self.enqueue(stack_key(name), "file deleted")

    def _adopt_store(self) -> None:
        """Stacks this directory applied before (per the store) that no file defines now: a
        file that is invalid at start keeps its stack on the spec it was last applied with (a
        restart must not tear down what a typo left running); one that is gone was removed
        while no agent was watching, and is pruned."""
        for record in self.store.stacks():
            path = Path(record.source)
            if path.parent != self.specs.root or record.name in self.specs.stacks():
                continue
            if path not in self.specs.errors:
                self._stack_removed(record.name)
                continue
            try:
                adopted = self.specs.adopt(path, Stack.model_validate(record.spec))
            except ValidationError:
                adopted = False
            self.log.emit("spec adopted" if adopted else "stack left alone", file=str(path), stack=record.name,
                          why="the file is invalid; " + ("running on the spec last applied" if adopted
                                                         else "its last applied spec no longer fits"))
            if adopted:
                self.enqueue(stack_key(record.name), "start")
                self._publish([record.name], applied=False)

    def _managed(self) -> set[str]:
        """Stacks this agent answers for: those its files define, and those being pruned."""
        return set(self.specs.stacks()) | self._pruning

    def _stacks_of(self, key: Key) -> list[str]:
        return [key.stack] if key.stack != HOST else sorted(self._managed())

    def _publish(self, names: Iterable[str], applied: bool, spec_applied: bool = False) -> None:
        """Store each stack's Synced / OutOfSync / Error for `reconcile status`."""
        stacks = self.specs.stacks()
        for name in names:
            found = stacks.get(name)
            source = str(found.path) if found else f"stack {name}"
            mine = [k for k in (*self._errors, *self._held, *self._gated) if k.stack in (name, HOST)]
            errors = [f"{k}: {self._errors[k]}" for k in mine if k in self._errors]
            errors += ["\n".join(str(e) for e in self.specs.errors.get(Path(source), []))]
            errors = [e for e in errors if e]
            held = [f"{k}: {self._held[k]}" for k in mine if k in self._held]
            held += [f"{k}: {self._gated[k].reason}" for k in mine if k in self._gated]
            self.status.stack(source, name, errors, held, applied or spec_applied)

    def _write_file_status(self, path: Path, error: str) -> None:
        """A file that is not good: under its last good stack's name, or none."""
        good = self.specs.good.get(path)
        if good is not None:
            self._publish([good.stack.name], applied=False)
            return
        self.status.invalid_file(path, error)

    def _note_probed(self, resolved: Target, focus: Focus | None) -> None:
        """The containers with a health check among those this pass resolved: every one of the
        stacks in its scope, or its focus's (in stacks a pass has resolved before); the others
        stay as an earlier pass found them."""
        if focus is None:
            for name in resolved.scope:
                if name in resolved.stacks:
                    self._probed[name] = _probed_in(resolved.stacks[name])
                else:
                    self._probed.pop(name, None)
            return
        for name, key in focus.containers:
            if name in self._probed:
                container = resolved.stacks[name].containers[key]
                if container.probed:
                    self._probed[name][key] = container
                else:
                    self._probed[name].pop(key, None)

    def _watch_kernel(self, focus: Focus | None = None) -> None:
        """Follow the sandboxes, container processes and [::1] proxies of the managed stacks;
        after a focused pass, those of its containers only (all it may have changed: the other
        watches stay as they are, and the next pass over everything renews every one)."""
        managed = self._managed()
        among = None if focus is None else {pair for pair in focus.containers if pair[0] in managed}
        if among is None:
            self.events.watch_namespaces([n for n, owner in netns.sandboxes().items() if owner[0] in managed])
        else:
            spaces = [netns_name(*pair) for pair in among]
            self.events.watch_namespaces(spaces, among=spaces)
        stacks = self.specs.stacks()
        self.prober.follow({(name, key): container for name in managed if name in stacks
                            for key, container in (self._probed[name] if name in self._probed
                                                   else _probed_in(stacks[name].stack)).items()})
        records = self.store.containers(among)
        processes = {(r.pid, r.start_time): container_key(stack, name)
                     for (stack, name), r in records.items() if stack in managed}
        processes |= {(p.handle.pid, p.handle.start_time): container_key(port.stack, port.container)
                      for port, found in running_proxies().items()
                      if port.stack in managed and (among is None or (port.stack, port.container) in among)
                      for p in found}
        if among is None:
            self.events.watch_pids(list(processes))
        else:
            keys = {container_key(*pair) for pair in among}
            before = [process for process, key in self._processes.items() if key in keys]
            self.events.watch_pids(list(processes), among=before)
            processes = {p: key for p, key in self._processes.items() if key not in keys} | processes
        self._processes = processes
        self._pids = {pid: key for (pid, _), key in processes.items()}


def _probed_in(stack: Stack) -> dict[str, Container]:
    """The stack's containers with a health check, by key. Until a pass resolves their images,
    an image container's own check runs with Docker's defaults for what it leaves out."""
    return {key: container.model_copy(update={"healthcheck": container.healthcheck.over(None)})
            for key, container in stack.containers.items() if container.probed and container.healthcheck}
