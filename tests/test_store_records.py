"""The state store's container records (pure: a store in a temporary directory)."""

from __future__ import annotations

from pathlib import Path

from state.store import ContainerRecord, Store


def test_records_are_read_whole_or_for_some_containers(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        records = [ContainerRecord(stack, name, pid, 10 * pid, {"command": [name]}, 0, 1.5)
                   for stack, name, pid in (("a", "web", 1), ("a", "db", 2), ("b", "web", 3))]
        store.record_containers(records)
        assert store.containers() == {(r.stack, r.container): r for r in records}
        # A focused pass reads its containers' records only; one without a record has none.
        assert store.containers([("b", "web"), ("a", "gone")]) == {("b", "web"): records[2]}
        assert store.containers([]) == {}
    finally:
        store.close()
