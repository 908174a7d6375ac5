"""The verbs of the CLI as plain functions: they return data, the CLI prints it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reconcile.engine import images
from reconcile.engine.plan import Plan
from reconcile.engine.session import Session, Target, open_session
from reconcile.engine.settings import Settings
from specs.errors import SpecErrors
from specs.loader import StackFile, load_file, load_path
from state.lock import exclusive
from state.store import Store


def diff(path: Path, settings: Settings) -> Plan:
    """The plan against the live kernel; reads only (the store is not even created, no image
    is pulled: one not on this host is planned as such)."""
    files = load_path(path)
    target = images.resolve(Target.of_files(files), settings, images.Pulling(allowed=False))
    with open_session(settings, writable=False) as session:
        _refuse_claimed(session.store, files)
        return session.plan(target)[0]


def apply(path: Path, settings: Settings, pulling: images.Pulling = images.Pulling(allowed=True),
          take_over: bool = False) -> Plan:
    """Converge; images are pulled (or their pins kept) before anything else is touched. A
    stack another file still declares is refused unless `take_over`."""
    files = load_path(path)  # the whole input is validated before any kernel call
    with exclusive(settings.state_dir):
        if not take_over:
            store = Store.open_readonly(settings.state_dir)
            try:
                _refuse_claimed(store, files)
            finally:
                store.close()
        target = images.resolve(Target.of_files(files), settings, pulling)
        with open_session(settings, writable=True) as session:
            plan = session.converge(target)
            for f in target.files:
                session.store.record_stack(f.stack.name, str(f.path.absolute()), f.stack.model_dump(mode="json"))
            return plan


def _refuse_claimed(store: Store, files: Sequence[StackFile]) -> None:
    """SpecErrors for a stack recorded as applied from another file that still declares it:
    applying this file would silently replace what that one runs."""
    recorded = {record.name: record.source for record in store.stacks()}
    errors = []
    for f in files:
        source = recorded.get(f.stack.name)
        if source is None or Path(source).absolute() == f.path.absolute() or not _declares(Path(source), f.stack.name):
            continue
        errors.append(f.error(("name",), f"stack '{f.stack.name}' was applied from {source}, which still declares "
                                         f"it: applying {f.path} would replace what that file runs (rename this "
                                         "stack, or take it over: apply --take-over)"))
    if errors:
        raise SpecErrors(errors)


def _declares(path: Path, name: str) -> bool:
    try:
        return load_file(path).stack.name == name
    except SpecErrors:
        return False  # unreadable or invalid now: it claims nothing


def stacks_in(path: Path) -> list[str]:
    return [f.stack.name for f in load_path(path)]


def down(stack_names: Sequence[str], settings: Settings) -> Plan:
    """Remove everything of these stacks that the kernel marks as ours, whatever the store says."""
    with exclusive(settings.state_dir), open_session(settings, writable=True) as session:
        plan = session.converge(Target.teardown(stack_names))
        for name in stack_names:
            session.store.forget_stack(name)
        return plan


def known_stacks(session: Session) -> set[str]:
    """Stacks of ours on this host: from the kernel marks, and from the store for stacks whose
    objects are all gone (so status can report them missing) or that a watch agent could not
    apply yet (so status shows why)."""
    owned = {name for observed in session.observe() for name in observed.owned_stacks()}
    watched = {w.stack for w in session.store.watch_statuses() if w.stack}
    return owned | watched | {record.name for record in session.store.stacks()}
