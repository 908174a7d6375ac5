"""Resource limits as this process can hand them to the containers it starts.

The runtime (crun) sets a container's limits on itself, as root, before it makes the container
(so before any user namespace: crun's "set rlimits before entering the user namespace"), and
it starts with the limits it inherits from us. Lowering a limit is always allowed; a hard limit
above the one we have needs CAP_SYS_RESOURCE in the host's user namespace, which some hosts
refuse even to root (reconcile run in a container without that capability; this project's own
machines), and no RLIMIT_NOFILE may go above fs.nr_open, whoever asks.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from specs.ulimits import DEFAULTS, NAMES, UNLIMITED

NR_OPEN = Path("/proc/sys/fs/nr_open")
RLIMIT_LOCKS = 10
"""asm-generic/resource.h's (every architecture's): Python's resource module does not name it."""


@dataclass(frozen=True)
class Ceilings:
    """The highest hard limit a start can set, by Docker's name (UNLIMITED: none)."""

    highest: dict[str, int]
    raisable: bool
    """Whether this process may raise its own hard limits: else `highest` holds them."""

    def of(self, name: str) -> int:
        return self.highest.get(name, UNLIMITED)


def number_of(name: str) -> int:
    """The resource's number (resource.RLIMIT_NOFILE for `nofile`)."""
    if name == "locks":
        return RLIMIT_LOCKS
    return int(getattr(resource, f"RLIMIT_{name.upper()}"))


def ceilings() -> Ceilings:
    """Read now (our limits may have been changed since: prlimit), with can_raise's answer."""
    raisable = can_raise()
    highest = {name: UNLIMITED if raisable else resource.getrlimit(number_of(name))[1] for name in NAMES}
    nr_open = _nr_open()
    if nr_open is not None and (highest["nofile"] == UNLIMITED or highest["nofile"] > nr_open):
        highest["nofile"] = nr_open
    return Ceilings(highest, raisable)


@cache
def can_raise() -> bool:
    """Whether this process may set a hard limit above its own: tried once a process on the
    first of its limits that is not at its highest already, and put back at once (lowering
    never fails). True when every one is at its highest: nothing would need raising."""
    nr_open = _nr_open()
    for name in NAMES:
        number = number_of(name)
        soft, hard = resource.getrlimit(number)
        top = nr_open if name == "nofile" else None
        if hard == UNLIMITED or (top is not None and hard >= top):
            continue
        try:
            resource.setrlimit(number, (soft, hard + 1))
        except (ValueError, OSError):  # ValueError: Python's word for EPERM here
            return False
        resource.setrlimit(number, (soft, hard))
        return True
    return True


@cache
def container_defaults() -> dict[str, tuple[int, int]]:
    """(soft, hard) by Docker's name of every limit a container gets unless its spec asks:
    specs.ulimits.DEFAULTS, and for the names it leaves out the host init's (PID 1 of our pid
    namespace, whose limits a host's services start from), never this process's own: a
    container and its execs get the same whoever starts them. Our own where the init's cannot
    be read (prlimit refused: a host init of another uid)."""
    found: dict[str, tuple[int, int]] = {}
    for name in NAMES:
        number = number_of(name)
        try:
            limits = resource.prlimit(1, number)
        except OSError:
            limits = resource.getrlimit(number)
        found[name] = (_named(limits[0]), _named(limits[1]))
    return found | DEFAULTS


def _named(limit: int) -> int:
    """A limit as specs.ulimits writes it (UNLIMITED for RLIM_INFINITY)."""
    return UNLIMITED if limit == resource.RLIM_INFINITY else limit


def _nr_open() -> int | None:
    try:
        return int(NR_OPEN.read_text())
    except (OSError, ValueError):
        return None
