"""`status`'s text, from its JSON document (reconcile.engine.render): pure."""

from __future__ import annotations

from reconcile.engine.render import format_status


def _document(*drift: dict[str, object]) -> dict[str, object]:
    return {"stacks": [{"name": "shop", "sync": "OutOfSync", "source": "/srv/shop/compose.yaml",
                        "networks": [], "containers": [], "errors": [], "drift": list(drift)}]}


def test_a_drift_line_gives_its_reason_in_brackets_and_none_when_it_has_none() -> None:
    text = format_status(_document({"action": "create", "kind": "cgroup", "key": "shop/db", "reason": ""},
                                   {"action": "create", "kind": "container", "key": "shop/db",
                                    "reason": "not running"}))
    assert [line for line in text.splitlines() if "drift" in line] == [
        "  drift: create cgroup shop/db", "  drift: create container shop/db (not running)"]
