"""Where things live; each overridable so tests and several instances can run side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from state.subnets import SubnetPool

DEFAULT_STATE_DIR = "/var/lib/reconcile"
DEFAULT_CGROUP_PARENT = "reconcile"
DEFAULT_DEPENDS_TIMEOUT = 300.0
"""Seconds a start waits for its depends_on conditions: with Docker's default schedule a first
probe comes 30 s after a start, and three failures take 90 s more."""
DEFAULT_FIREWALL_BACKEND = "auto"
"""nftables where libnftables works with the kernel, iptables under a foreign FORWARD DROP
policy or without libnftables (docs/spec.md, Firewall backends; controllers.firewall.backends). Both backends
pass the end-to-end suite and the agent's repair by event."""
DEFAULT_PULL_STALL_TIMEOUT = 120.0
"""Seconds an image pull may wait on the registry without a byte coming before it is given up
(kernel.skopeo's stall watch): a registry that stops sending on an open connection would
otherwise hold the pull for ever, and with it the image store's lock every removal waits on,
and the layers it fetches, which every other pull of them waits on."""
DEFAULT_SUBNET_POOL = "base=10.89.0.0/16,size=24"
"""Podman's choice for networks created without a subnet (10.88.0.0/16 is its own default
network's): 256 networks of 253 containers each, in private space Docker does not use."""


FIREWALL_BACKENDS = ("auto", "nftables", "iptables")


class SettingsError(ValueError):
    """A setting from the environment that cannot be used: the CLI reports it as a usage error
    naming the variable (exit 1), before any verb runs."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    cgroup_parent: str
    insecure_registries: frozenset[str] = frozenset()
    """Registries (host[:port]) reached without verified TLS, as Docker's insecure-registries;
    loopback registries always are."""
    depends_timeout: float = DEFAULT_DEPENDS_TIMEOUT
    """Seconds a start in `apply` waits for its dependencies' conditions (service_healthy,
    service_completed_successfully) before it fails."""
    subnet_pool: SubnetPool = SubnetPool.parse(DEFAULT_SUBNET_POOL)
    """Where networks declared without a subnet get theirs."""
    firewall_backend: str = DEFAULT_FIREWALL_BACKEND
    """auto, nftables or iptables (controllers.firewall.backends)."""
    pull_stall_timeout: float = DEFAULT_PULL_STALL_TIMEOUT
    """0: a pull waits on its registry for as long as it takes."""

    @classmethod
    def resolve(cls, state_dir: str | None, cgroup_parent: str | None,
                subnet_pool: str | None = None, firewall_backend: str | None = None) -> Settings:
        """Flag, then environment, then default. A flag's value was checked by its parser; a
        variable's is checked here (SettingsError naming it)."""
        return cls(
            state_dir=Path(state_dir or os.environ.get("RECONCILE_STATE_DIR") or DEFAULT_STATE_DIR),
            cgroup_parent=(cgroup_parent or os.environ.get("RECONCILE_CGROUP_PARENT")
                           or DEFAULT_CGROUP_PARENT),
            insecure_registries=frozenset(
                r.strip() for r in os.environ.get("RECONCILE_INSECURE_REGISTRIES", "").split(",") if r.strip()),
            depends_timeout=_seconds("RECONCILE_DEPENDS_TIMEOUT", DEFAULT_DEPENDS_TIMEOUT),
            subnet_pool=_subnet_pool(subnet_pool),
            firewall_backend=_firewall_backend(firewall_backend),
            pull_stall_timeout=_seconds("RECONCILE_PULL_STALL_TIMEOUT", DEFAULT_PULL_STALL_TIMEOUT),
        )

    def environment(self) -> dict[str, str]:
        """These settings as the environment of a `reconcile` the agent runs (an image pull):
        resolved there with no flag, they come back the same."""
        return {"RECONCILE_STATE_DIR": str(self.state_dir), "RECONCILE_CGROUP_PARENT": self.cgroup_parent,
                "RECONCILE_INSECURE_REGISTRIES": ",".join(sorted(self.insecure_registries)),
                "RECONCILE_DEPENDS_TIMEOUT": repr(self.depends_timeout),
                "RECONCILE_SUBNET_POOL": f"base={self.subnet_pool.base},size={self.subnet_pool.size}",
                "RECONCILE_FIREWALL_BACKEND": self.firewall_backend,
                "RECONCILE_PULL_STALL_TIMEOUT": repr(self.pull_stall_timeout)}


def _seconds(variable: str, default: float) -> float:
    """A number of seconds from the environment."""
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise SettingsError(f"{variable}={text!r}: expected a number of seconds")
    return seconds


def _subnet_pool(flag: str | None) -> SubnetPool:
    text = flag or os.environ.get("RECONCILE_SUBNET_POOL") or DEFAULT_SUBNET_POOL
    try:
        return SubnetPool.parse(text)
    except ValueError as exc:
        raise SettingsError(f"RECONCILE_SUBNET_POOL={exc}") from None


def _firewall_backend(flag: str | None) -> str:
    backend = flag or os.environ.get("RECONCILE_FIREWALL_BACKEND") or DEFAULT_FIREWALL_BACKEND
    if backend not in FIREWALL_BACKENDS:
        raise SettingsError(f"RECONCILE_FIREWALL_BACKEND={backend!r}: expected one of {', '.join(FIREWALL_BACKENDS)}")
    return backend
