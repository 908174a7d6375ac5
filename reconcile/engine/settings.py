"""Where things live; each overridable so tests and several instances can run side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/reconcile"
DEFAULT_CGROUP_PARENT = "reconcile"


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    cgroup_parent: str
    insecure_registries: frozenset[str] = frozenset()
    """Registries (host[:port]) reached without verified TLS, as Docker's insecure-registries;
    loopback registries always are."""

    @classmethod
    def resolve(cls, state_dir: str | None, cgroup_parent: str | None) -> Settings:
        """Flag, then environment, then default."""
        return cls(
            state_dir=Path(state_dir or os.environ.get("RECONCILE_STATE_DIR") or DEFAULT_STATE_DIR),
            cgroup_parent=(cgroup_parent or os.environ.get("RECONCILE_CGROUP_PARENT")
                           or DEFAULT_CGROUP_PARENT),
            insecure_registries=frozenset(
                r.strip() for r in os.environ.get("RECONCILE_INSECURE_REGISTRIES", "").split(",") if r.strip()),
        )
