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


def test_each_line_of_an_error_is_indented_under_its_file_or_stack() -> None:
    """A file's errors are one message of several lines (one per error)."""
    errors = "/srv/other.yml:1:1: missing required field 'name'\n/srv/other.yml:1:1: unknown field 'foo'"
    document = {"stacks": [], "invalid_files": [{"source": "/srv/other.yml", "updated": "2026-12-07T20:00:00Z",
                                                  "error": errors}]}
    assert format_status(document).splitlines()[1:3] == [
        "  /srv/other.yml:1:1: missing required field 'name'", "  /srv/other.yml:1:1: unknown field 'foo'"]
