"""The verbs of the CLI as plain functions: they return data, the CLI prints it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reconcile.engine import images
from reconcile.engine.plan import Plan
from reconcile.engine.session import Session, Target, open_session
from reconcile.engine.settings import Settings
from specs.loader import load_path
from state.lock import exclusive


def diff(path: Path, settings: Settings) -> Plan:
    """The plan against the live kernel; reads only (the store is not even created, no image
    is pulled: one not on this host is planned as such)."""
    target = images.resolve(Target.of_files(load_path(path)), settings, images.Pulling(allowed=False))
    with open_session(settings, writable=False) as session:
        return session.plan(target)[0]


def apply(path: Path, settings: Settings, pulling: images.Pulling = images.Pulling(allowed=True)) -> Plan:
    """Converge; images are pulled (or their pins kept) before anything else is touched."""
    files = load_path(path)  # the whole input is validated before any kernel call
    with exclusive(settings.state_dir):
        target = images.resolve(Target.of_files(files), settings, pulling)
        with open_session(settings, writable=True) as session:
            plan = session.converge(target)
            for f in target.files:
                session.store.record_stack(f.stack.name, str(f.path), f.stack.model_dump(mode="json"))
            return plan


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
