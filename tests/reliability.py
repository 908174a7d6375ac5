"""Figures for the reliability report: tests that try many inputs say how many they tried, so
the report states what was exercised instead of guessing it from test names. Nothing is
written unless RECONCILE_RELIABILITY_OUT names a directory (a report run sets it; a developer's
run leaves no files behind)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

OUT_ENV = "RECONCILE_RELIABILITY_OUT"


def record(section: str, **figures: int | float | str) -> None:
    """Merge `figures` into `$RECONCILE_RELIABILITY_OUT/<section>.json`: several tests can add
    to one section; a figure recorded again replaces the earlier value. The file is replaced
    atomically, so a report reader never sees half of it, and merged under a lock, so tests of
    two pytest-xdist workers that record at once both keep their figures."""
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    path = Path(out) / f"{section}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(figures)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        partial.replace(path)
