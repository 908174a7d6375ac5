"""The embedded state store: a cache of what the kernel cannot hold.

The kernel marks are the truth; this SQLite file only keeps what has no kernel home (the spec
each stack was last applied with, IPAM leases, container records), so a lost or deleted store
is rebuilt from the marks on the next apply. Readers (`diff`, `status`) open it read-only and
never create it: a diff must leave the host, state dir included, exactly as it found it (hence
the default rollback journal, not WAL: a WAL reader creates -shm/-wal files).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

from kernel import crashpoints

DB_NAME = "state.db"  # DO NOT RENAME: existing hosts keep their store under this name
LEASES, LEASES6 = "leases", "leases6"  # DO NOT RENAME: tables of existing stores

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stacks (
    name        TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    applied_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    stack       TEXT NOT NULL,
    container   TEXT NOT NULL,
    network     TEXT NOT NULL,
    address     TEXT NOT NULL,
    PRIMARY KEY (stack, container, network)
);
CREATE TABLE IF NOT EXISTS leases6 (
    stack       TEXT NOT NULL,
    container   TEXT NOT NULL,
    network     TEXT NOT NULL,
    address     TEXT NOT NULL,
    PRIMARY KEY (stack, container, network)
);
CREATE TABLE IF NOT EXISTS subnet_leases (
    stack       TEXT NOT NULL,
    network     TEXT NOT NULL,
    subnet      TEXT NOT NULL,
    PRIMARY KEY (stack, network)
);
CREATE TABLE IF NOT EXISTS containers (
    stack       TEXT NOT NULL,
    container   TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    start_time  INTEGER NOT NULL,
    spec_json   TEXT NOT NULL,
    restarts    INTEGER NOT NULL DEFAULT 0,
    started_at  REAL NOT NULL,
    PRIMARY KEY (stack, container)
);
CREATE TABLE IF NOT EXISTS cgroup_parents (
    parent      TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS watch_status (
    source      TEXT PRIMARY KEY,
    stack       TEXT,
    sync        TEXT NOT NULL,
    applied_at  REAL,
    error       TEXT,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_generation (
    n           INTEGER NOT NULL
);
INSERT INTO lease_generation (n) SELECT random() & 0x3fffffffffffffff
    WHERE NOT EXISTS (SELECT 1 FROM lease_generation);
""" + "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()} AFTER {event} ON {table} "
    "BEGIN UPDATE lease_generation SET n = n + 1; END;"
    for table in (LEASES, LEASES6) for event in ("INSERT", "UPDATE", "DELETE"))
"""The lease generation (one row, no stack's) moves with every lease row written, by any writer
(an older release too: the triggers are the store's); it starts at a random number, so a store
made anew (a lost one) does not repeat the generations of the one before."""


@dataclass(frozen=True)
class StackRecord:
    name: str
    source: str
    spec: dict[str, object]
    applied_at: float


@dataclass(frozen=True)
class WatchStatus:
    """What the watch agent last made of one stack file: its stack (None while the file has
    never been valid), Synced / OutOfSync / Error, when it last converged, the last error."""

    source: str
    stack: str | None
    sync: str
    applied_at: float | None
    error: str | None
    updated_at: float


@dataclass(frozen=True)
class ContainerRecord:
    """What the kernel cannot tell us about a container: the spec it was started with (to
    know when a change needs a recreate) and how often it was restarted."""

    stack: str
    container: str
    pid: int
    start_time: int
    spec_json: str
    """The spec, as stored: decoded only when asked for (`spec`). A pass reads every record,
    and a thousand decoded specs held through it were ~3 MiB; `started_with` compares texts."""
    restarts: int
    started_at: float

    @classmethod
    def of(cls, stack: str, container: str, pid: int, start_time: int, spec: Mapping[str, object],
           restarts: int, started_at: float) -> ContainerRecord:
        return cls(stack, container, pid, start_time, json.dumps(spec), restarts, started_at)

    @property
    def spec(self) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(self.spec_json)
        return decoded

    def started_with(self, spec: Mapping[str, object]) -> bool:
        """Whether it was started with exactly this spec: the same text as a record of it would
        hold (the common case, nothing decoded), else the same decoded value (a record written
        with its keys in another order)."""
        return self.spec_json == json.dumps(spec) or self.spec == spec


_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _with_schema(path: Path) -> sqlite3.Connection:
    # root's alone whatever the umask or the state dir's own mode: specs hold environments
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    os.chmod(path, 0o600)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")  # every table appears at once to readers
    except BaseException:
        db.close()
        raise
    return db


def _opened(path: Path, warn: Callable[[str], None] | None) -> sqlite3.Connection:
    """The store at `path` with its schema; one that is not a database is kept aside first."""
    try:
        return _with_schema(path)
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode not in _DAMAGED:
            raise
        aside = path.with_name(f"{DB_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-journal"):  # a hot journal belongs to the file it was written for
            with suppress(FileNotFoundError):
                os.rename(f"{path}{suffix}", f"{aside}{suffix}")
        (warn or _to_stderr)(f"the state store {path} is damaged ({exc}): kept as {aside.name}, "
                             "and a new one rebuilt from what is on the host")
    return _with_schema(path)


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode): what tells a file from another put under its name; None once gone."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _to_stderr(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


class Store:
    """One connection to the state store of a state dir."""

    def __init__(self, connection: sqlite3.Connection | None, path: Path | None = None):
        self._db = connection  # None: read-only view of a store that does not exist yet
        self._path = path
        self._file = file_identity(path) if path is not None else None
        """What the connection has open (device, inode), for `replaced`."""

    @classmethod
    def open(cls, state_dir: Path, warn: Callable[[str], None] | None = None) -> Store:
        """Open for writing, creating the state dir and schema when missing. A damaged store (not
        a database) is moved aside, said through `warn` (stderr by default), and a new one made:
        rebuilt from what is on the host, as a lost one is."""
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / DB_NAME
        return cls(_opened(path, warn), path)

    def replaced(self) -> bool:
        """Whether the file this (writable) store has open is no longer the one at its path:
        deleted or replaced under a long-lived holder (the watch agent), whose writes would then
        fail and reads show the past, while each pass's own connection opens the new one."""
        return self._path is not None and file_identity(self._path) != self._file

    def reopen(self, warn: Callable[[str], None] | None = None) -> None:
        """Let go of the file this store had open and open the one at its path, as `open` opens
        it (made anew if missing, moved aside if damaged). Failing, it holds none: it reads as
        empty and is reopened by the next call."""
        assert self._path is not None, "a read-only store is opened anew, not reopened"
        self.close()
        self._db, self._file = None, None
        self._db = _opened(self._path, warn)
        self._file = file_identity(self._path)

    @classmethod
    def open_readonly(cls, state_dir: Path) -> Store:
        """A store another process is creating (its file made, no table committed yet: a watch
        agent's first moment), or a damaged one (the next writer replaces it), reads as one that
        does not exist yet."""
        path = state_dir / DB_NAME
        if not path.exists():
            return cls(None)
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            empty = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone() is None
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorcode not in _DAMAGED:
                raise
            empty = True
        if empty:
            db.close()
            return cls(None)
        return cls(db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def release_cache(self) -> None:
        """Give back the pages this connection keeps cached (SQLite's `shrink_memory`), for a
        connection held for long: the watch agent's keeps the pages it read last, up to 2 MiB
        (the stacks' specs among them), all the time it is idle; the next read takes them from
        the kernel's page cache again."""
        if self._db is not None:
            self._db.execute("PRAGMA shrink_memory")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes of one apply land together or not at all."""
        if self._db is None:
            raise RuntimeError("the state store was opened read-only")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        crashpoints.step("store-commit")
        self._db.execute("COMMIT")

    def stacks(self) -> list[StackRecord]:
        if self._db is None:
            return []
        rows = self._db.execute(
            "SELECT name, source, spec_json, applied_at FROM stacks ORDER BY name").fetchall()
        return [StackRecord(name, source, json.loads(spec), applied_at)
                for name, source, spec, applied_at in rows]

    def spec_texts(self) -> dict[str, str]:
        """Each stack's last applied spec as stored (JSON), by name: compared as text, not
        decoded (at a thousand containers, ~6 ms and ~5 MiB of short-lived objects)."""
        if self._db is None:
            return {}
        return dict(self._db.execute("SELECT name, spec_json FROM stacks").fetchall())

    def sources(self) -> dict[str, str]:
        """The file each stack was last applied from, by name (no spec decoded)."""
        if self._db is None:
            return {}
        return dict(self._db.execute("SELECT name, source FROM stacks").fetchall())

    def record_stack(self, name: str, source: str, spec_json: str) -> None:
        """`spec_json`: the stack's `model_dump_json()`."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO stacks (name, source, spec_json, applied_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET source=excluded.source, "
                "spec_json=excluded.spec_json, applied_at=excluded.applied_at",
                (name, source, spec_json, time.time()))

    def move_stack(self, name: str, source: str) -> None:
        """The stack is defined by another file now; its last applied spec stays."""
        with self.transaction() as db:
            db.execute("UPDATE stacks SET source = ? WHERE name = ?", (source, name))

    def forget_stack(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM stacks WHERE name = ?", (name,))

    def made_cgroup_parent(self, parent: str) -> bool:
        """Whether reconcile made this cgroup parent (it was in no hierarchy): only such a parent
        is removed with the last stack; one that was there before, maybe with limits of an
        admin's, stays."""
        if self._db is None:
            return False
        return self._db.execute("SELECT 1 FROM cgroup_parents WHERE parent = ?", (parent,)).fetchone() is not None

    def record_cgroup_parent(self, parent: str, made: bool) -> None:
        with self.transaction() as db:
            if made:
                db.execute("INSERT OR IGNORE INTO cgroup_parents (parent) VALUES (?)", (parent,))
            else:
                db.execute("DELETE FROM cgroup_parents WHERE parent = ?", (parent,))

    def lease_generation(self) -> int | None:
        """Moves whenever a lease of either family is written; None for a store without it
        (opened read-only, made by an earlier release and not opened for writing since)."""
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT n FROM lease_generation").fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else int(row[0])

    def leases_of_generation(self) -> tuple[int | None, Leases]:
        """Both families' leases and their generation, as one commit left them (one read
        transaction: a reader that does not hold the lock, as `diff`, may be written beside)."""
        if self._db is None:
            return None, ({}, {})
        self._db.execute("BEGIN")
        try:
            return self.lease_generation(), (self.leases(), self.leases6())
        finally:
            self._db.execute("COMMIT")

    def leases(self) -> dict[tuple[str, str, str], IPv4Address]:
        # From the packed form: a thousand addresses parse in 2 ms, not 15 (ipaddress's text parser).
        return {key: IPv4Address(socket.inet_pton(socket.AF_INET, address))
                for key, address in self._leases(LEASES).items()}

    def leases6(self) -> dict[tuple[str, str, str], IPv6Address]:
        """IPv6 leases of the endpoints on dual-stack networks."""
        return {key: IPv6Address(socket.inet_pton(socket.AF_INET6, address))
                for key, address in self._leases(LEASES6).items()}

    def _leases(self, table: str) -> dict[tuple[str, str, str], str]:
        """A store made before IPv6 and opened read-only (diff, status) has no leases6 table."""
        if self._db is None or not self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
            return {}
        rows = self._db.execute(f"SELECT stack, container, network, address FROM {table}").fetchall()
        return {(stack, container, network): address for stack, container, network, address in rows}

    def replace_leases(self, stacks: set[str] | frozenset[str],
                       leases: Mapping[tuple[str, str, str], IPv4Address],
                       leases6: Mapping[tuple[str, str, str], IPv6Address]) -> None:
        """The leases of these stacks, of both families, become exactly `leases` and `leases6`
        (one transaction): an endpoint that left the spec, or a network that lost its subnet6,
        releases its address."""
        with self.transaction() as db:
            for table, chosen in ((LEASES, leases), (LEASES6, leases6)):
                db.executemany(f"DELETE FROM {table} WHERE stack = ?", [(s,) for s in stacks])
                db.executemany(f"INSERT INTO {table} (stack, container, network, address) VALUES (?, ?, ?, ?)",
                               [(*key, str(address)) for key, address in chosen.items() if key[0] in stacks])

    def subnet_leases(self) -> dict[tuple[str, str], IPv4Network]:
        """Subnets given to networks from the pool, by (stack, network)."""
        if self._db is None:
            return {}
        try:
            rows = self._db.execute("SELECT stack, network, subnet FROM subnet_leases").fetchall()
        except sqlite3.OperationalError:  # read-only view of a store older than the table
            return {}
        return {(stack, network): IPv4Network(subnet) for stack, network, subnet in rows}

    def replace_subnet_leases(self, stacks: set[str] | frozenset[str],
                              leases: Mapping[tuple[str, str], IPv4Network]) -> None:
        """The subnet leases of these stacks become exactly `leases`: a network that left the
        spec, or now declares its subnet, releases its pooled one."""
        with self.transaction() as db:
            db.executemany("DELETE FROM subnet_leases WHERE stack = ?", [(s,) for s in stacks])
            db.executemany("INSERT INTO subnet_leases (stack, network, subnet) VALUES (?, ?, ?)",
                           [(*key, str(subnet)) for key, subnet in leases.items() if key[0] in stacks])

    def containers(self, among: Collection[tuple[str, str]] | None = None) -> dict[tuple[str, str], ContainerRecord]:
        """The records of every container, or of those of `among` that have one."""
        if self._db is None:
            return {}
        query = "SELECT stack, container, pid, start_time, spec_json, restarts, started_at FROM containers"
        if among is None:
            rows = self._db.execute(query).fetchall()
        else:
            rows = [row for key in sorted(among)
                    for row in self._db.execute(f"{query} WHERE stack = ? AND container = ?", key).fetchall()]
        return {(r[0], r[1]): ContainerRecord(*r) for r in rows}

    def record_containers(self, records: Sequence[ContainerRecord]) -> None:
        """One transaction for a batch: each commit costs fsyncs, ~2 ms apiece."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO containers (stack, container, pid, start_time, spec_json, "
                           "restarts, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(r.stack, r.container, r.pid, r.start_time, r.spec_json, r.restarts,
                             r.started_at) for r in records])

    def forget_containers(self, keys: Sequence[tuple[str, str]]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM containers WHERE stack = ? AND container = ?", keys)

    def watch_statuses(self) -> list[WatchStatus]:
        if self._db is None:
            return []
        try:
            rows = self._db.execute("SELECT source, stack, sync, applied_at, error, updated_at FROM watch_status "
                                    "ORDER BY source").fetchall()
        except sqlite3.OperationalError:  # read-only view of a store no agent has written to yet
            return []
        return [WatchStatus(*row) for row in rows]

    def record_watch_status(self, status: WatchStatus) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO watch_status (source, stack, sync, applied_at, error, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (status.source, status.stack, status.sync,
                                                     status.applied_at, status.error, status.updated_at))

    def forget_watch_status(self, source: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM watch_status WHERE source = ?", (source,))

    def forget_watch_statuses_of(self, stack: str) -> None:
        """Every row a watch agent wrote for this stack, whatever file it came from."""
        with self.transaction() as db:
            db.execute("DELETE FROM watch_status WHERE stack = ?", (stack,))


Leases = tuple[Mapping[tuple[str, str, str], IPv4Address], Mapping[tuple[str, str, str], IPv6Address]]
"""Both families' address leases, by endpoint."""


class LeaseCache:
    """The address leases as last read, read again only once the store's lease generation has
    moved: a watch agent's repair is a session of its own, and reading a thousand leases cost
    3-5 ms of its first plan at 1,000 containers. The leases it hands out are shared: read-only."""

    def __init__(self) -> None:
        self._read: tuple[int, Leases] | None = None

    def read(self, store: Store) -> Leases:
        if self._read is not None and self._read[0] == store.lease_generation():
            return self._read[1]
        generation, leases = store.leases_of_generation()
        self._read = None if generation is None else (generation, leases)
        return leases
