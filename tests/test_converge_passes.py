"""Session.converge's loop over passes, with scripted plans (pure: no kernel; the store is
SQLite in a temporary directory)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

from controllers.base import Desired, Focus
from controllers.change import Action, Change
from reconcile.engine.plan import Plan
from reconcile.engine.session import OnApplied, Session, Target
from reconcile.engine.settings import Settings
from reconcile.engine.snapshot import Controllers
from state.store import Store


class _Payload:
    """What a change carries for apply (a container's whole desired state, in the real thing)."""


class _NoPurges:
    """A container controller with nothing set aside to purge: all a convergence asks of it."""

    def purge_left_behind(self) -> str | None:
        return None

    def purge_set_aside(self) -> None:
        pass


class _NothingSetAside:
    container = _NoPurges()


class _ScriptedPasses(Session):
    """A session whose passes plan one change each, then nothing; as each pass plans, it
    counts what earlier passes planned (their changes' payloads and desired states) that is
    still alive."""

    def __init__(self, state_dir: Path, changing_passes: int) -> None:
        super().__init__(Settings(state_dir=state_dir, cgroup_parent="rc-test"), Store.open(state_dir),
                         cast(Controllers, _NothingSetAside()))  # never observed: plan() is scripted
        self._passes = self._plans(changing_passes)
        self.planned_before: list[weakref.ref[object]] = []
        self.alive_when_planning: list[int] = []

    @staticmethod
    def _plans(changing_passes: int) -> Iterator[Plan]:
        for index in range(changing_passes):
            yield Plan((Change(Action.CREATE, "container", f"s/c{index}", desired=_Payload()),))
        while True:
            yield Plan(())

    def plan(self, target: Target, focus: Focus | None = None) -> tuple[Plan, Desired]:
        self.alive_when_planning.append(sum(1 for ref in self.planned_before if ref() is not None))
        plan, desired = next(self._passes), Desired(stacks={}, scope=target.scope)
        self.planned_before += [weakref.ref(desired), *(weakref.ref(change.desired) for change in plan.changes)]
        return plan, desired

    def apply(self, plan: Plan, on_applied: OnApplied = lambda _batch: None) -> None:
        on_applied(plan.changes)


def test_each_pass_plans_with_the_earlier_ones_let_go(tmp_path: Path) -> None:
    session = _ScriptedPasses(tmp_path, changing_passes=2)
    made: list[str] = []

    def told(batch: Sequence[Change]) -> None:
        made.extend(change.key for change in batch)

    try:
        session.converge(Target({}, frozenset(), []), on_applied=told)
    finally:
        session.store.close()
    assert made == ["s/c0", "s/c1"]
    assert len(session.planned_before) == 5  # three desired states, two payloads
    # A confirming pass over a thousand containers observes without their first plan held.
    assert session.alive_when_planning == [0, 0, 0]
