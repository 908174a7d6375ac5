"""The verbs of the CLI as plain functions: they return data, the CLI prints it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from controllers.change import Change
from reconcile.engine import pinning, sources
from reconcile.engine.plan import Plan
from reconcile.engine.session import Session, Target, open_session
from reconcile.engine.settings import Settings
from reconcile.engine.snapshot import Snapshot
from specs.errors import SpecErrors
from specs.loader import NamedFile, StackFile, load_path, name_path
from state import volumes
from state.lock import exclusive
from state.store import StackRecord, Store


def diff(path: Path, settings: Settings, take_over: bool = False) -> Plan:
    """The plan against the live kernel; reads only (the store is not even created, no image
    is pulled: one not on this host is planned as such)."""
    files = load_path(path)
    _check_sources([f.named for f in files], settings, take_over)
    target = pinning.resolve(Target.of_files(files), settings, pinning.Pulling(allowed=False))
    with open_session(settings, writable=False) as session:
        return _warned(session.plan(target)[0], files)


def apply(path: Path, settings: Settings, pulling: pinning.Pulling = pinning.Pulling(allowed=True),
          take_over: bool = False) -> Plan:
    """Converge; images are pulled (or their pins kept) before anything else is touched."""
    files = load_path(path)  # the whole input is validated before any kernel call
    with exclusive(settings.state_dir):
        _check_sources([f.named for f in files], settings, take_over)
        target = pinning.resolve(Target.of_files(files), settings, pulling)
        with open_session(settings, writable=True) as session:
            # Recorded before anything is touched: an apply that fails (or is killed) partway
            # has still made part of the stack, which is then known as applied from this file
            # (status shows its source and how far the host is from this spec; another file
            # cannot take it without --take-over; its images are not pruned). One refused
            # against the host before it touched anything (an overlap, an exhausted pool) was
            # not applied: the records are put back as they were.
            restore = _records_of(session.store, [f.stack.name for f in target.files])
            for f in target.files:
                session.store.record_stack(f.stack.name, str(f.path.absolute()), f.stack.model_dump_json())
            made: list[Change] = []
            try:
                plan = _converged(session, target, made, files)
            except Exception as exc:
                if isinstance(exc.cause if isinstance(exc, PartlyApplied) else exc, SpecErrors) and not made:
                    restore()
                raise
            return _warned(plan, files)


def _records_of(store: Store, names: Sequence[str]) -> Callable[[], None]:
    """What puts these stacks' records back as they are now (none: forgotten)."""
    sources = {r.name: r.source for r in store.stacks()}
    texts = store.spec_texts()

    def restore() -> None:
        for name in names:
            if name in sources:
                store.record_stack(name, sources[name], texts[name])
            else:
                store.forget_stack(name)
    return restore


class PartlyApplied(Exception):
    """A convergence that failed (`cause`) after it changed the host, or with warnings to give:
    what it made and found (`applied`, with the files' warnings) is told with the failure, so
    that a failed apply is not read as one that touched nothing."""

    def __init__(self, cause: Exception, applied: Plan) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.applied = applied


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a convergence, with what it had made (`applied`, the files' warnings with
    it): the batches that were done, and of the batch under way what its controller says it
    made (controllers.errors.InterruptedPartway: the container controller's)."""

    def __init__(self, applied: Plan) -> None:
        super().__init__()
        self.applied = applied


def _converged(session: Session, target: Target, made: list[Change] | None = None,
               files: Sequence[StackFile] = ()) -> Plan:
    """Every change the convergence made, with what it found wrong and could not mend: what
    `apply` prints, and the stacks `down` found. `made` gathers them as they are made. A failure
    after a change, or with warnings, is raised as PartlyApplied; Ctrl-C as Interrupted."""
    made = [] if made is None else made
    try:
        session.converge(target, on_applied=made.extend)
    except KeyboardInterrupt:
        raise Interrupted(_warned(Plan(tuple(made), warnings=session.warnings), files)) from None
    except Exception as exc:
        applied = _warned(Plan(tuple(made), warnings=session.warnings), files)
        if applied.empty and not applied.warnings:
            raise
        raise PartlyApplied(exc, applied) from exc
    return Plan(tuple(made), warnings=session.warnings)


def _warned(plan: Plan, files: Sequence[StackFile]) -> Plan:
    """The plan with the warnings of the files it came from (Compose keys without effect) before
    its own."""
    return replace(plan, warnings=(*(str(w) for f in files for w in f.warnings), *plan.warnings))


def _check_sources(files: Sequence[NamedFile], settings: Settings, take_over: bool,
                   remedy: str = sources.TAKE_OVER) -> None:
    """A stack whose file is still there is applied (and removed) from that file only, or
    taken over."""
    if take_over:
        return
    errors = sources.claimed_elsewhere(files, _stack_records(settings), remedy)
    if errors:
        raise SpecErrors(errors)


def _stack_records(settings: Settings) -> list[StackRecord]:
    store = Store.open_readonly(settings.state_dir)
    try:
        return store.stacks()
    finally:
        store.close()


class InvalidStackFiles(SpecErrors):
    """`down PATH` of files that do not load: their stacks can still be removed by name."""

    def __init__(self, errors: SpecErrors, names: Sequence[str]) -> None:
        super().__init__(errors.errors)
        self.hint = ("hint: remove the stack by name: " + "; ".join(f"reconcile down --stack {n}" for n in names)
                     if names else "hint: remove a stack by name: reconcile down --stack NAME")


def stacks_in(path: Path, settings: Settings) -> list[str]:
    """The stacks `down PATH` removes: those its files name, by their files alone (a file that
    has become invalid elsewhere since it was applied still names its stack), and those last
    applied from its files whatever these name now (a `name:` edited since, a Compose file that
    lost its `name:` and so names its directory): not one another file still declares (by
    name, then). A file that cannot name its stack is an error, unless a stack was applied from
    it: that one is removed."""
    records = _stack_records(settings)
    try:
        files, errors = name_path(path)
    except SpecErrors as exc:  # no file to read (an empty directory, one that cannot be listed)
        files, errors = [], exc.errors
    applied_here = [r for r in records if sources.applied_from(Path(r.source), path)]
    unexplained = [e for e in errors if not any(sources.applied_from(Path(r.source), Path(e.file))
                                                for r in applied_here)]
    if unexplained:
        raise InvalidStackFiles(SpecErrors(unexplained), [f.name for f in files])
    _check_sources(files, settings, take_over=False, remedy="remove it by name: reconcile down --stack {name}")
    return list(dict.fromkeys([*(f.name for f in files), *(r.name for r in applied_here)]))


@dataclass(frozen=True)
class Teardown:
    plan: Plan
    unknown: tuple[str, ...]
    """Names given that nothing on this host knows (no kernel mark, no store record)."""
    volumes_removed: tuple[volumes.StoredVolume, ...] = ()
    volumes_kept: tuple[volumes.StoredVolume, ...] = ()
    """Named volumes survive `down` unless asked (`--volumes`): what a container wrote is data."""


def down(stack_names: Sequence[str], settings: Settings, remove_volumes: bool = False) -> Teardown:
    """Remove everything of these stacks that the kernel marks as ours, whatever the store says,
    and forget them (a watch agent's status rows too: `status` must not list a removed stack).
    Their named volumes go too with `remove_volumes`, once no container of theirs runs."""
    with exclusive(settings.state_dir), open_session(settings, writable=True) as session:
        recorded = {r.name for r in session.store.stacks()} | {w.stack for w in session.store.watch_statuses()}
        plan = _converged(session, Target.teardown(stack_names))
        for name in stack_names:
            session.store.forget_stack(name)
            session.store.forget_watch_statuses_of(name)
        kept = [v for name in stack_names for v in volumes.stored(settings.state_dir, name)]
        removed = [v for name in stack_names for v in volumes.remove_stack(settings.state_dir, name)] \
            if remove_volumes else []
        known = recorded | {change.stack for change in plan.changes} | {v.stack for v in kept}
        return Teardown(plan, tuple(name for name in stack_names if name not in known), tuple(removed),
                        () if remove_volumes else tuple(kept))


def known_stacks(session: Session, observed: Snapshot) -> set[str]:
    """Stacks of ours on this host: from the kernel marks (as `observed`), and from the store for
    stacks whose objects are all gone (so status can report them missing) or that a watch agent
    could not apply yet (so status shows why)."""
    owned = observed.owned_stacks()
    watched = {w.stack for w in session.store.watch_statuses() if w.stack}
    return owned | watched | {record.name for record in session.store.stacks()}
