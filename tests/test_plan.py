"""Plan ordering and summary (pure)."""

from __future__ import annotations

from controllers.change import Action, Change
from reconcile.engine.plan import order


def ch(action: Action, kind: str, key: str) -> Change:
    return Change(action, kind, key)


def test_deletions_first_in_reverse_then_the_rest_forward() -> None:
    networks = [ch(Action.CREATE, "network", "s/a"), ch(Action.DELETE, "network", "s/old")]
    containers = [ch(Action.DELETE, "container", "s/x"), ch(Action.DELETE, "container", "s/y"),
                  ch(Action.CREATE, "container", "s/db"), ch(Action.RECREATE, "container", "s/web")]
    plan = order([networks, containers])
    assert [(c.action.value, c.key) for c in plan.changes] == [
        ("delete", "s/y"), ("delete", "s/x"), ("delete", "s/old"),
        ("create", "s/a"), ("create", "s/db"), ("recreate", "s/web"),
    ]
    summary = plan.summary()
    assert (summary.add, summary.change, summary.destroy) == (3, 0, 4)


def test_empty_plan() -> None:
    plan = order([[], []])
    assert plan.empty and plan.summary().to_json() == {"add": 0, "change": 0, "destroy": 0}
