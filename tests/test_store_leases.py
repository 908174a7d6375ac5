"""The state store's lease generation and the cache of leases kept across sessions (pure: stores
in a temporary directory)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from state.store import DB_NAME, ContainerRecord, LeaseCache, Store

WEB = ("s", "web", "net")


def test_the_lease_generation_moves_with_every_lease_written_and_nothing_else(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        first = store.lease_generation()
        assert first is not None
        store.record_containers([ContainerRecord.of("s", "web", 1, 10, {}, 0, 1.5)])
        store.replace_subnet_leases({"s"}, {})
        assert store.lease_generation() == first
        store.replace_leases({"s"}, {WEB: IPv4Address("10.0.0.2")}, {})
        moved = store.lease_generation()
        assert moved != first
        store.replace_leases({"s"}, {}, {WEB: IPv6Address("fd00::2")})  # one deleted, one added
        assert store.lease_generation() not in (first, moved)
        # a writer that knows nothing of it (an earlier release): the store's triggers count
        before = store.lease_generation()
        with closing(sqlite3.connect(tmp_path / DB_NAME)) as other, other:
            other.execute("UPDATE leases6 SET address = 'fd00::3'")
        assert store.lease_generation() != before
    finally:
        store.close()


def test_a_store_made_anew_does_not_repeat_the_generations_of_the_lost_one(tmp_path: Path) -> None:
    generations = []
    for _ in range(2):
        store = Store.open(tmp_path)
        generations.append(store.lease_generation())
        store.close()
        (tmp_path / DB_NAME).unlink()
    assert generations[0] != generations[1]


def test_the_cache_reads_the_leases_again_only_once_written(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    cache = LeaseCache()
    try:
        store.replace_leases({"s"}, {WEB: IPv4Address("10.0.0.2")}, {})
        read = cache.read(store)
        assert read == ({WEB: IPv4Address("10.0.0.2")}, {})
        assert cache.read(store) is read
        store.record_containers([ContainerRecord.of("s", "web", 1, 10, {}, 0, 1.5)])
        assert cache.read(store) is read  # not a lease
        # written by another process, between two sessions that share the cache
        other = Store.open(tmp_path)
        other.replace_leases({"s"}, {WEB: IPv4Address("10.0.0.3")}, {})
        other.close()
        assert cache.read(store) == ({WEB: IPv4Address("10.0.0.3")}, {})
    finally:
        store.close()


def test_without_a_generation_the_cache_reads_every_time(tmp_path: Path) -> None:
    """A store of an earlier release, opened read-only (diff, status): no counter to trust."""
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as old, old:
        old.execute("CREATE TABLE leases (stack TEXT, container TEXT, network TEXT, address TEXT)")
        old.execute("INSERT INTO leases VALUES ('s', 'web', 'net', '10.0.0.2')")
    readonly = Store.open_readonly(tmp_path)
    cache = LeaseCache()
    try:
        assert readonly.lease_generation() is None
        read = cache.read(readonly)
        assert read == ({WEB: IPv4Address("10.0.0.2")}, {})
        assert cache.read(readonly) is not read
    finally:
        readonly.close()
