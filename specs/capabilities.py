"""Linux capability names, and the set a container holds unless its spec says otherwise.

Docker's default bounding set is the floor users assume (`docker run` without `--cap-add`):
14 capabilities, 0xa80425fb as /proc/PID/status prints it. Spec fields name capabilities
without the `CAP_` prefix, as Compose's `cap_add` does; either spelling is accepted.
"""

from __future__ import annotations

ALL = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
"""Every capability, in kernel bit order (CAP_CHOWN is bit 0)."""

DOCKER_DEFAULT = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})


def normalise(name: str) -> str:
    """`net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` are one capability; ALL stands for all."""
    upper = name.upper()
    return upper.removeprefix("CAP_")


def effective(cap_add: list[str], cap_drop: list[str], privileged: bool,
              available: frozenset[str] = frozenset(ALL)) -> frozenset[str]:
    """The capability set of a container: Docker's default minus cap_drop, plus cap_add (`ALL`
    in either means every capability); privileged holds them all. Never more than
    `available`, the bounding set of the process starting it (a capability it lacks cannot be
    given: privileged and ALL mean all it has, as with containerd)."""
    if privileged:
        return available
    dropped = {normalise(c) for c in cap_drop}
    added = {normalise(c) for c in cap_add}
    if "ALL" in added:  # as Moby: every capability but those dropped
        held = set(ALL) - dropped
    elif "ALL" in dropped:  # `--cap-drop ALL --cap-add KILL` is KILL
        held = added
    else:
        held = (set(DOCKER_DEFAULT) | added) - dropped
    return frozenset(held) & available


def unavailable(cap_add: list[str], available: frozenset[str]) -> list[str]:
    """Capabilities named in cap_add that this host cannot give (ALL takes what there is)."""
    return [name for name in cap_add if name != "ALL" and name not in available]


def from_mask(mask: int) -> frozenset[str]:
    """Names of the bits set in a capability mask as /proc/PID/status prints it (CapBnd)."""
    return frozenset(name for bit, name in enumerate(ALL) if mask >> bit & 1)


def kernel_names(caps: frozenset[str]) -> list[str]:
    """`CAP_*` names in bit order, as the OCI runtime spec and seccomp profiles spell them."""
    return [f"CAP_{name}" for name in ALL if name in caps]
