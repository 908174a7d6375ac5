"""What a sandbox still holds of ours after a `down` of everything: the one leak check the
reliability tests share (kill anywhere, convergence, concurrency)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controllers.container import CONTAINERS_DIR, RUNTIME_DIR
from kernel.oci import Runtime
from specs.names import OVERLAY_SOURCE_PREFIX
from state.store import DB_NAME
from tests.canary import NETNS as CANARY_NETNS
from tests.sandbox import Sandbox


def leftovers(sandbox: Sandbox) -> list[str]:
    """Everything of ours still on the host, named: links with our marks, sandboxes, rules and
    chains (either backend), cgroups below the per-run parent, container processes, root mounts, the runtime's
    pinned namespace and entries, store rows and files."""
    sandbox.purged()
    found = [f"link {link['ifname']}" for link in sandbox.our_links()]
    found += [f"netns {n}" for n in sandbox.netns_names() if n != CANARY_NETNS]
    found += [f"rule {line}" for line in sandbox.run("iptables-save").stdout.splitlines()
              if "reconcile" in line.lower()]
    found += [f"nft {line.strip()}" for line in sandbox.run("nft", "list", "ruleset").stdout.splitlines()
              if "reconcile" in line.lower()]  # the nftables backend's table and rules
    found += [f"cgroup {child}" for top in sandbox.cgroup_dirs() for child in top.rglob("*") if child.is_dir()]
    found += [f"process {pid}" for pid in sandbox.processes()]
    below = f"{sandbox.state_dir / CONTAINERS_DIR}/"  # roots, and idmapped lower layers
    pin = str(Runtime.at(sandbox.state_dir / RUNTIME_DIR).namespace_pin)  # the runtime's namespace, hybrid hosts
    found += [f"mount {line.split()[4]}" for line in sandbox.run("cat", "/proc/self/mountinfo").stdout.splitlines()
              if f" {OVERLAY_SOURCE_PREFIX}" in line or line.split()[4].startswith(below) or line.split()[4] == pin]
    runtime_root = sandbox.state_dir / RUNTIME_DIR
    found += [f"runtime entry {entry.name}" for entry in (runtime_root.iterdir() if runtime_root.is_dir() else [])]
    files = sandbox.state_dir / CONTAINERS_DIR  # bundle, layers and log of each container
    found += [f"file {path}" for path in files.rglob("*")]
    return found + store_rows(sandbox.state_dir / DB_NAME)


def store_rows(db_path: Path) -> list[str]:
    """Rows of any table of the store that belong to a stack (have a `stack` or `name`)."""
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = []
        for table in tables:
            if {c[1] for c in db.execute(f"PRAGMA table_info({table})")} & {"stack", "name"}:
                rows += [f"row {table} {r}" for r in db.execute(f"SELECT * FROM {table}")]
        return rows
    finally:
        db.close()
