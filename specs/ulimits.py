"""Resource limits (setrlimit) as Docker and Compose take them: `ulimits: {nofile: 65536,
nproc: {soft: 1024, hard: 2048}, memlock: -1}`. A name is one Docker accepts (moby's go-units
ulimitNameMapping); a single number is both the soft and the hard limit; -1 (or `unlimited`)
is no limit, RLIM_INFINITY. What a container gets for the names its spec leaves out is
DEFAULTS, never what the process that starts it happens to have."""

from __future__ import annotations

from specs.errors import quoted
from specs.fields import SubfieldError, describe_value

UNLIMITED = -1
"""How Docker writes RLIM_INFINITY: `--ulimit memlock=-1`, Compose's `memlock: -1`."""
UNLIMITED_WORD = "unlimited"
"""ulimit(1)'s and prlimit(1)'s word for it, taken too."""
MAX_LIMIT = 2**63 - 1
"""The largest finite limit Docker can carry (an int64)."""

NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
         "rtprio", "rttime", "sigpending", "stack")
"""Docker's, each the RLIMIT_ of its name in capitals. `as` (address space) is left out, as
Docker leaves it out ("doesn't seem usable with the way Docker inits a container")."""

DEFAULTS: dict[str, tuple[int, int]] = {
    "nofile": (1024, 524288),
    "nproc": (UNLIMITED, UNLIMITED),
    "core": (0, UNLIMITED),
}
"""(soft, hard) of every container that does not set these (docs/spec.md says why): what a
container of Docker Engine 29 gets on a systemd host (containerd 2.1.5 leaves nofile at
systemd's 1024:524288 and sets nproc unlimited), except core's soft limit: 0, as systemd gives
every service (a program may raise it itself), not containerd's unlimited, so a crash does not
write a core file into the container's layer unasked. The others are the kernel's (and the
host's) and reach a container through the runtime as they reach any process."""


def check_name(value: str) -> str:
    if value == "as":
        raise ValueError("ulimit 'as' is not supported, as Docker does not take it: limit memory with "
                         "resources.memory")
    if value not in NAMES:
        raise ValueError(f"unknown ulimit {quoted(value)}: use {', '.join(NAMES[:-1])} or {NAMES[-1]}")
    return value


def to_limit(value: object) -> int:
    """A soft or hard limit: a number from 0, or -1 / `unlimited` for no limit."""
    if value == UNLIMITED_WORD:
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a number, or -1 (or {UNLIMITED_WORD}) for no limit, got {describe_value(value)}")
    if value < UNLIMITED or value > MAX_LIMIT:
        raise ValueError(f"must be a number from 0 to {MAX_LIMIT}, or -1 for no limit, got {value}")
    return value


def to_ulimit(value: object) -> object:
    """A single value is both limits, as Compose's `nofile: 20000` and Docker's `nofile=20000`."""
    if isinstance(value, dict):
        return value  # the model checks soft and hard
    limit = to_limit(value)
    return {"soft": limit, "hard": limit}


def check_order(soft: int, hard: int) -> None:
    """Docker's rule: the soft limit is at most the hard one (no limit is above every number)."""
    if exceeds(soft, hard):
        raise SubfieldError(("soft",), f"soft limit {shown(soft)} is above the hard limit {shown(hard)}")


def shown(limit: int) -> str:
    return UNLIMITED_WORD if limit == UNLIMITED else str(limit)


def resource_type(name: str) -> str:
    """The OCI runtime's name of it (process.rlimits[].type)."""
    return f"RLIMIT_{name.upper()}"


def exceeds(limit: int, ceiling: int) -> bool:
    """Whether `limit` is above `ceiling` (UNLIMITED is above every number)."""
    return ceiling != UNLIMITED and (limit == UNLIMITED or limit > ceiling)


def at_most(limit: int, ceiling: int) -> int:
    """`limit`, lowered to `ceiling` when above it."""
    return ceiling if exceeds(limit, ceiling) else limit
