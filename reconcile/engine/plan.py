"""Ordering a set of changes into a plan (pure).

Deletions go first, walking the controllers in reverse (containers before the networks they sit
on) and each controller's list backwards (dependents before what they depend on), so names and
addresses are freed before they are reused. Creations, updates and recreations follow, forward
through the controllers and in each controller's own (dependency) order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controllers.change import Action, Change


@dataclass(frozen=True)
class Summary:
    add: int
    change: int
    destroy: int

    def to_json(self) -> dict[str, int]:
        return {"add": self.add, "change": self.change, "destroy": self.destroy}


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    warnings: tuple[str, ...] = ()
    """Shown with the plan: what in the stack files has no effect here (Compose keys), located;
    after a convergence, what it found wrong on the host and could not mend."""

    @property
    def empty(self) -> bool:
        return not self.changes

    def selected(self, select: Callable[[Change], bool]) -> Plan:
        """The changes `select` keeps, less those that follow one it drops (Change.follows)."""
        kept = [change for change in self.changes if select(change)]
        made = {(change.kind, change.key) for change in kept}
        return Plan(tuple(change for change in kept if change.follows <= made))

    def summary(self) -> Summary:
        actions = [c.action for c in self.changes]
        recreate = actions.count(Action.RECREATE)
        return Summary(add=actions.count(Action.CREATE) + recreate,
                       change=actions.count(Action.UPDATE),
                       destroy=actions.count(Action.DELETE) + recreate)


def order(per_controller: Sequence[Sequence[Change]]) -> Plan:
    """`per_controller` lists each controller's changes, controllers in dependency order."""
    deletions = [c for changes in reversed(per_controller) for c in reversed(changes)
                 if c.action is Action.DELETE]
    others = [c for changes in per_controller for c in changes if c.action is not Action.DELETE]
    return Plan(tuple(deletions + others))
