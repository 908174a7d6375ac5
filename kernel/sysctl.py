"""Sysctls of the caller's namespaces (/proc/sys/net is per network namespace).

Keys are given as path parts, not a dotted string, because interface names may contain dots
(`net/ipv4/conf/br.0/route_localnet`)."""

from __future__ import annotations

from pathlib import Path

from kernel import crashpoints
from kernel.pseudofiles import read_bytes

PROC_SYS = Path("/proc/sys")


def read(*parts: str) -> str:
    return read_bytes(f"{PROC_SYS}/{'/'.join(parts)}").decode().strip()


def write(value: str, *parts: str) -> None:
    crashpoints.step("sysctl")
    PROC_SYS.joinpath(*parts).write_text(value + "\n")


def disable_ipv6_key(ifname: str) -> tuple[str, ...]:
    """The key of a link's IPv6 switch (`disable_ipv6`: 1 is off) in its namespace."""
    return ("net", "ipv6", "conf", ifname, "disable_ipv6")
