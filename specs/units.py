"""Quantities users write as text: byte sizes ("64Mi", "1G") and CPU lists ("0-3,5").

Both parse to exact integers, so a spec compares equal to what the kernel reports back
(cgroup files hold plain bytes and canonical CPU lists).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

from specs.errors import quoted

BYTE_UNITS: dict[str, int] = {
    "": 1,
    "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
}
"""Binary (Ki, Mi, ...) and decimal (K, M, ...) suffixes; Docker's lowercase 'm' (binary there)
is deliberately not accepted: it is ambiguous, and an error is cheaper than a wrong limit."""

MAX_CPU_INDEX = 8191
"""The largest CPU number a kernel can have (NR_CPUS is at most 8192)."""

MIN_CPU_SHARES, DEFAULT_CPU_SHARES, MAX_CPU_SHARES = 2, 1024, 262144
"""CPU shares (a relative weight, Docker's --cpu-shares): the kernel's range on v1 (MIN_SHARES,
MAX_SHARES of kernel/sched) and its default, a cgroup's cpu.shares when nobody wrote it."""

# Bounded digit counts keep a hostile "999...9" far from Python's int conversion limits.
_SIZE_RE = re.compile(r"(?P<number>[0-9]{1,20}(?:\.[0-9]{1,20})?) ?(?P<unit>[A-Za-z]*)")
_CPU_RANGE_RE = re.compile(r"(?P<first>[0-9]{1,5})(?:-(?P<last>[0-9]{1,5}))?")
_DOCKER_SIZE_RE = re.compile(r"(?P<number>[0-9]{1,20}(?:\.[0-9]{1,20})?) ?(?P<unit>[bkmgtp]?)i?b?", re.IGNORECASE)
"""Docker's RAMInBytes (go-units): a unit, an optional i (1GiB), an optional b; powers of 1024."""


def parse_bytes(text: str) -> int:
    """Bytes in a size like "64Mi", "1.5G" or "1048576" (fractions round down to whole bytes)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a size like '64Mi', '1G' or a number of bytes, got {quoted(text)}")
    unit = match["unit"]
    if unit not in BYTE_UNITS:
        raise ValueError(f"unknown unit {quoted(unit)} in {quoted(text)}: use Ki, Mi, Gi, Ti (powers of 1024), "
                         "K, M, G, T (powers of 1000) or no unit for bytes")
    return int(Decimal(match["number"]) * BYTE_UNITS[unit])


def docker_size(text: str) -> int | None:
    """Bytes in a size as Docker writes them (`mem_limit`, `--shm-size`, `--tmpfs size=`): bytes,
    or b k m g t p (powers of 1024, with or without a trailing i and b: 1g, 1gb, 1GiB; any
    case); None when `text` is not one."""
    match = _DOCKER_SIZE_RE.fullmatch(text.strip())
    if match is None:
        return None
    return int(Decimal(match["number"]) * 1024 ** "bkmgtp".index(match["unit"].lower() or "b"))


def parse_cpu_list(text: str) -> list[int]:
    """The CPUs of a kernel CPU list ("0-3,5"), sorted and without repeats."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        match = _CPU_RANGE_RE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"expected a CPU list like '0-3,5', got {quoted(text)}")
        first = int(match["first"])
        last = int(match["last"] or first)
        if last < first:
            raise ValueError(f"CPU range '{part.strip()}' is backwards: write '{last}-{first}'")
        if last > MAX_CPU_INDEX:
            raise ValueError(f"CPU {last} is out of range: the kernel supports CPUs 0-{MAX_CPU_INDEX}")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The kernel's canonical form of a CPU list ("0-3,5"), as cpuset.cpus reads back."""
    ranges: list[tuple[int, int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], cpu)
        else:
            ranges.append((cpu, cpu))
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)
