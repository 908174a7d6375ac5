"""Kernel parameters of a container's own namespaces, as Docker and Compose take them:
`sysctls: {net.core.somaxconn: 1024}`. Only what a container's namespaces hold may be set, as
runc's and crun's checks allow it: its IPC namespace's `kernel.msg*`, `kernel.sem`, `kernel.shm*`
and `fs.mqueue.*`, and its network namespace's `net.*`. A parameter of the host as a whole
(`vm.max_map_count`, `kernel.pid_max`) would change every container and the host itself: an
error. `kernel.hostname` and `kernel.domainname` are refused too, as Docker refuses them: the
hostname is `hostname:`.

What a container gets for the names its spec leaves out is DEFAULTS, as Docker gives them."""

from __future__ import annotations

import re

from specs.errors import quoted
from specs.fields import describe_value

IPC_NAMES = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
             "kernel.shmmni", "kernel.shm_rmid_forced")
"""The IPC namespace's own (runc's validator, moby's list)."""
NAMESPACED_PREFIXES = ("fs.mqueue.", "net.")

PING_GROUP_RANGE = "net.ipv4.ping_group_range"
DEFAULTS: dict[str, str] = {
    "net.ipv4.ip_unprivileged_port_start": "0",
    PING_GROUP_RANGE: "0 2147483647",
}
"""What Docker Engine (20.10 on) sets in every container with a network namespace of its own,
unless its spec sets them: any user may listen on ports below 1024 (an image running as a user
other than root serving port 80) and send ICMP echo (ping) without a raw socket. Both concern
the container's own namespace only, which holds no port or address of the host."""

DISABLE_IPV6 = re.compile(r"net\.ipv6\.conf\.[^.]+\.disable_ipv6")
"""IPv6 off, on every interface (`all`, `default`) or one."""
_NAME = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_-]+)+")
_MAX_VALUE = 4096
"""A page: the most the kernel reads of one write to a /proc/sys file."""


def of_network(name: str) -> bool:
    """Whether the network namespace holds it (the others are the IPC namespace's)."""
    return name.startswith("net.")


def seen_from_outside(name: str, value: str, id_base: int, size: int) -> str:
    """The value to write from outside a user namespace that maps ids 0..size-1 to id_base..:
    the kernel reads ping_group_range's two group ids in the writer's namespace, so the
    container's groups LOW HIGH are written as the host's (within its range: none when LOW is
    beyond it, as the kernel's own "1 0"; every other value as it is). Docker sets no default
    in a user namespace; this keeps what the default means inside: every group may ping."""
    low, _, high = value.replace("\t", " ").partition(" ")
    if name != PING_GROUP_RANGE or not (low.strip().isdigit() and high.strip().isdigit()):
        return value
    last = size - 1
    if int(low) > last:
        return "1 0"
    return f"{id_base + int(low)} {id_base + min(int(high), last)}"


def check_name(name: str) -> str:
    """A name as sysctl(8) shows it, dotted."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid sysctl name {quoted(name, ascii_only=True)}: write it as sysctl(8) shows it, "
                         "like net.core.somaxconn")
    if name in ("kernel.hostname", "kernel.domainname"):
        raise ValueError(f"{name} is not supported: set the container's hostname with hostname:")
    if name not in IPC_NAMES and not name.startswith(NAMESPACED_PREFIXES):
        raise ValueError(f"sysctl {quoted(name)} is not a container's own: it would change the whole host; only "
                         f"{', '.join(IPC_NAMES)}, fs.mqueue.* and net.* are (as Docker allows)")
    return name


def to_value(value: object) -> str:
    """A whole number or text, written as given (`1024`, `"0 2147483647"`, `true` as 1)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a number or text, got {describe_value(value)}")
    if not value.strip() or "\n" in value or "\x00" in value or len(value) > _MAX_VALUE:
        raise ValueError(f"expected one line of at most {_MAX_VALUE} characters, got {quoted(value)}")
    return value
