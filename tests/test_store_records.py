"""The state store's container records (pure: a store in a temporary directory)."""

from __future__ import annotations

import ctypes
import json
import sqlite3
from pathlib import Path

import pytest

from state.store import ContainerRecord, Store


def test_records_are_read_whole_or_for_some_containers(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        records = [ContainerRecord.of(stack, name, pid, 10 * pid, {"command": [name]}, 0, 1.5)
                   for stack, name, pid in (("a", "web", 1), ("a", "db", 2), ("b", "web", 3))]
        store.record_containers(records)
        assert store.containers() == {(r.stack, r.container): r for r in records}
        # A focused pass reads its containers' records only; one without a record has none.
        assert store.containers([("b", "web"), ("a", "gone")]) == {("b", "web"): records[2]}
        assert store.containers([]) == {}
    finally:
        store.close()


def test_a_store_being_created_reads_as_none_yet(tmp_path: Path) -> None:
    """`status` beside a watch agent's first moment: the file exists, its tables do not yet."""
    sqlite3.connect(tmp_path / "state.db").close()  # what connect() leaves before the schema
    early = Store.open_readonly(tmp_path)
    assert early.stacks() == [] and early.containers() == {} and early.leases() == {}
    early.close()
    Store.open(tmp_path).close()  # the schema, in one transaction
    made = Store.open_readonly(tmp_path)
    assert made.stacks() == [] and made.watch_statuses() == []
    made.close()


@pytest.mark.parametrize("damage", [b"garbage, not a database" * 100, None], ids=["not a database", "bad header"])
def test_a_damaged_store_is_kept_aside_and_made_anew(tmp_path: Path, damage: bytes | None) -> None:
    """Every run, `down` included, failed on it; the store is rebuilt from the host as a lost one."""
    store = Store.open(tmp_path)
    store.record_stack("a", "/specs/a.yaml", '{"name":"a"}')
    store.close()
    path = tmp_path / "state.db"
    if damage is None:  # its header overwritten
        data = bytearray(path.read_bytes())
        data[:100] = b"\xff" * 100
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(damage)
    read = Store.open_readonly(tmp_path)
    assert read.stacks() == []
    read.close()
    warnings: list[str] = []
    store = Store.open(tmp_path, warn=warnings.append)
    try:
        assert store.stacks() == []
        store.record_stack("b", "/specs/b.yaml", '{"name":"b"}')
    finally:
        store.close()
    (aside,) = [p.name for p in tmp_path.iterdir() if p.name.startswith("state.db.damaged-")]
    assert len(warnings) == 1 and aside in warnings[0]
    assert warnings[0].startswith(f"the state store {path} is damaged (")


def test_a_record_tells_whether_it_was_started_with_a_spec_without_decoding_it_first() -> None:
    spec = {"command": ["sleep", "1"], "env": {"A": "1"}, "stop_grace": 10.0}
    record = ContainerRecord.of("s", "web", 1, 10, spec, 0, 1.5)
    assert record.spec == spec and record.started_with(spec)
    # A record written with its keys in another order (an earlier version) is the same spec.
    reordered = ContainerRecord.of("s", "web", 1, 10, dict(reversed(spec.items())), 0, 1.5)
    assert reordered.spec_json != record.spec_json and reordered.started_with(spec)
    assert not record.started_with({**spec, "env": {"A": "2"}})
    assert not record.started_with({key: value for key, value in spec.items() if key != "stop_grace"})


def test_a_stack_spec_is_kept_as_the_text_it_was_recorded_with(tmp_path: Path) -> None:
    """The watch agent compares the text of the spec it applies with the recorded one on every
    pass over everything, rather than decoding the record (~6 ms and ~5 MiB at 1000 containers)."""
    store = Store.open(tmp_path)
    try:
        assert store.spec_texts() == {}
        store.record_stack("a", "/specs/a.yaml", '{"name":"a","containers":{}}')
        store.record_stack("b", "/specs/b.yaml", '{"name":"b"}')
        store.record_stack("a", "/specs/a.yaml", '{"name":"a","containers":{"web":{}}}')
        assert store.spec_texts() == {"a": '{"name":"a","containers":{"web":{}}}', "b": '{"name":"b"}'}
        assert [(r.name, r.spec) for r in store.stacks()] == [("a", {"name": "a", "containers": {"web": {}}}),
                                                              ("b", {"name": "b"})]
    finally:
        store.close()


def _sqlite_memory_used() -> int:
    """SQLite's own count of the memory it holds, in this process (the library sqlite3 loaded)."""
    library = next((line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                    if "libsqlite3" in line.split()[-1]), None)
    if library is None:
        pytest.skip("this Python's sqlite3 has SQLite built in: no library to ask for its count")
    memory_used = ctypes.CDLL(library).sqlite3_memory_used
    memory_used.restype = ctypes.c_int64
    return int(memory_used())


def test_a_long_held_connection_gives_back_the_pages_it_read(tmp_path: Path) -> None:
    """The watch agent's connection, after each key: what a read cached is given back."""
    spec = json.dumps({"containers": {f"c{i}": {"command": ["sleep", "100000"]} for i in range(20_000)}})
    store = Store.open(tmp_path)
    try:
        store.record_stack("big", "/dev/null", spec)
        store.release_cache()
        before = _sqlite_memory_used()
        assert store.spec_texts() == {"big": spec}
        assert _sqlite_memory_used() - before > len(spec) // 2  # its pages, cached
        store.release_cache()
        assert _sqlite_memory_used() - before < len(spec) // 10
    finally:
        store.close()
