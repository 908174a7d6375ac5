"""Seccomp filters for containers: Moby's default profile with Moby's later hardening (see
with_later_hardening), cut down for a container's capabilities the way Docker's daemon does it,
then compiled into the raw BPF that crun takes in its `run.oci.seccomp_bpf_data` annotation.

crun compiles a JSON profile on every start (~10 ms of libseccomp work). The BPF depends only on
the profile, the capability set, the host architecture and the kernel version, so it is compiled
once per capability set and read back from a cache file for every other container."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from kernel.durable import write_durably

# Installed by scripts/setup.sh (taken from Debian's Moby package, so it gets security updates).
DEFAULT_PROFILE = Path("/usr/share/reconcile/seccomp/moby-default.json")


class SeccompError(Exception):
    """The seccomp profile is missing, unreadable or not a valid Moby/OCI profile."""


class _HostArch(NamedTuple):
    moby: str  # the name Moby profiles use in includes/excludes "arches" ("amd64")
    scmp: str  # the libseccomp name that selects this host's "archMap" entry


# platform.machine() -> Moby's names for it (its goToNative and nativeToSeccomp tables). A
# machine Moby does not know matches no archMap entry and no "arches" condition, as in Docker;
# libseccomp then filters for the native architecture only.
_HOST_ARCHES: dict[str, _HostArch] = {
    "x86_64": _HostArch("amd64", "SCMP_ARCH_X86_64"),
    "i386": _HostArch("x86", "SCMP_ARCH_X86"),
    "i686": _HostArch("x86", "SCMP_ARCH_X86"),
    "aarch64": _HostArch("arm64", "SCMP_ARCH_AARCH64"),
    "armv6l": _HostArch("arm", "SCMP_ARCH_ARM"),
    "armv7l": _HostArch("arm", "SCMP_ARCH_ARM"),
    "ppc64": _HostArch("ppc64", "SCMP_ARCH_PPC64"),
    "ppc64le": _HostArch("ppc64le", "SCMP_ARCH_PPC64LE"),
    "riscv64": _HostArch("riscv64", "SCMP_ARCH_RISCV64"),
    "s390x": _HostArch("s390x", "SCMP_ARCH_S390X"),
}
_UNKNOWN_HOST_ARCH = _HostArch("", "")

def load_profile(path: Path = DEFAULT_PROFILE) -> dict[str, Any]:
    """Read a Moby-format profile; every failure is a SeccompError that says how to fix it."""

    def fail(reason: str) -> SeccompError:
        return SeccompError(f"seccomp profile {path}: {reason}; scripts/setup.sh installs it")

    try:
        profile = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise fail("missing") from None
    except OSError as error:
        raise fail(f"unreadable ({error.strerror})") from None
    except ValueError as error:
        raise fail(f"not JSON ({error})") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        raise fail('not a Moby profile (no "defaultAction")')
    return profile


AF_ALG, AF_VSOCK = 38, 40
_WITHDRAWN = frozenset({"io_uring_setup", "io_uring_enter", "io_uring_register", "socket"})
_SOCKET_RULES: tuple[dict[str, Any], ...] = tuple(
    {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": value, "op": op}]}
    for value, op in ((AF_ALG, "SCMP_CMP_LT"), (AF_ALG + 1, "SCMP_CMP_EQ"), (AF_VSOCK, "SCMP_CMP_GT")))
"""socket(2) of every address family but AF_ALG and AF_VSOCK (one rule's conditions on the same
argument are ANDed, so three rules: below 38, 39, above 40)."""


def with_later_hardening(moby_profile: Mapping[str, Any]) -> dict[str, Any]:
    """The profile with what Moby's own default has denied since Debian 12's copy (Moby
    20.10): the `io_uring_*` calls (Moby 25.0, moby#46762: a ring runs system calls this filter
    never sees) and `socket(2)` of AF_VSOCK (23.0, moby#44562: the hypervisor's sockets) and
    AF_ALG (29.x, moby#52494: CVE-2026-31431). Every rule that allows `socket` gives way to the
    three of _SOCKET_RULES, so applying it twice changes nothing more. Pure."""
    syscalls: list[Mapping[str, Any]] = []
    for entry in moby_profile.get("syscalls") or []:
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        if entry.get("action") != "SCMP_ACT_ALLOW" or _WITHDRAWN.isdisjoint(names):
            syscalls.append(entry)
        elif kept := [name for name in names if name not in _WITHDRAWN]:
            syscalls.append({**{k: v for k, v in entry.items() if k != "name"}, "names": kept})
    return {**moby_profile, "syscalls": [*syscalls, *(dict(rule) for rule in _SOCKET_RULES)]}


def oci_seccomp(
    moby_profile: Mapping[str, Any],
    caps: frozenset[str],
    arch: str,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The OCI `linux.seccomp` object Docker's daemon derives from `moby_profile` for a container
    whose bounding set is `caps`, on a machine `arch` (as platform.machine() names it) running
    `kernel` (major, minor; the running kernel by default). Pure: tests pass every input."""
    host = _HOST_ARCHES.get(arch, _UNKNOWN_HOST_ARCH)
    running = kernel if kernel is not None else _kernel_version(os.uname().release)
    oci: dict[str, Any] = {"defaultAction": moby_profile["defaultAction"]}
    if moby_profile.get("defaultErrnoRet") is not None:
        oci["defaultErrnoRet"] = moby_profile["defaultErrnoRet"]
    oci["architectures"] = _architectures(moby_profile, host)
    oci["syscalls"] = [
        _oci_syscall(entry)
        for entry in moby_profile.get("syscalls") or []
        if _included(entry.get("includes") or {}, caps, host.moby, running)
        and not _excluded(entry.get("excludes") or {}, caps, host.moby, running)
    ]
    return oci


def _architectures(moby_profile: Mapping[str, Any], host: _HostArch) -> list[str]:
    """The host's archMap entry: its own architecture first, then the ones its kernel also runs
    (x86 and x32 binaries on x86_64), which the filter must cover or they would bypass it."""
    listed = list(moby_profile.get("architectures") or [])
    arch_map = moby_profile.get("archMap") or []
    if listed and arch_map:
        raise SeccompError('"architectures" and "archMap" are both set; use one of them')
    for entry in arch_map:
        if entry.get("architecture") == host.scmp:
            return [entry["architecture"], *(entry.get("subArchitectures") or [])]
    return listed


def _included(
    includes: Mapping[str, Any], caps: frozenset[str], arch: str, kernel: tuple[int, int]
) -> bool:
    """An entry applies only if the container holds every listed capability, runs on a listed
    architecture and on a kernel at least minKernel (an empty condition always holds)."""
    arches = includes.get("arches") or []
    min_kernel = includes.get("minKernel")
    return (
        (not arches or arch in arches)
        and set(includes.get("caps") or []) <= caps
        and (not min_kernel or kernel >= _kernel_version(min_kernel))
    )


def _excluded(
    excludes: Mapping[str, Any], caps: frozenset[str], arch: str, kernel: tuple[int, int]
) -> bool:
    """An entry is dropped if the container holds any listed capability (the entry is then the
    restricted fallback for unprivileged containers), runs on a listed architecture or on a
    kernel at least minKernel."""
    min_kernel = excludes.get("minKernel")
    return (
        arch in (excludes.get("arches") or [])
        or bool(caps & set(excludes.get("caps") or []))
        or bool(min_kernel and kernel >= _kernel_version(min_kernel))
    )


def _kernel_version(release: str) -> tuple[int, int]:
    """Major and minor only, as Docker compares them: "6.18.44-fc" and "6.18" are equal."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        raise SeccompError(f"cannot parse kernel version {release!r}")
    return int(match[1]), int(match[2])


def _oci_syscall(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The OCI syscall entry: Moby's conditions and comment are spent once filtered."""
    names = list(entry.get("names") or [])
    if entry.get("name"):
        if names:
            raise SeccompError('a syscall entry sets both "name" and "names"; use one of them')
        names = [entry["name"]]
    if "action" not in entry:
        raise SeccompError(f'the syscall entry for {names} has no "action"')
    syscall: dict[str, Any] = {"names": names, "action": entry["action"]}
    if entry.get("args"):
        syscall["args"] = [dict(arg) for arg in entry["args"]]
    if entry.get("errnoRet") is not None:
        syscall["errnoRet"] = entry["errnoRet"]
    return syscall


def filter_for(caps: frozenset[str], cache_dir: Path, profile: Path = DEFAULT_PROFILE) -> bytes:
    """The BPF for a container holding `caps` on this host, compiled once per distinct OCI
    seccomp object and then read from `cache_dir/<sha256 of its canonical JSON>.bpf`."""
    moby_profile = load_profile(profile)
    try:
        oci = oci_seccomp(with_later_hardening(moby_profile), caps, platform.machine())
        return _cached_bpf(oci, cache_dir)
    except SeccompError as error:
        raise SeccompError(f"seccomp profile {profile}: {error}") from error


@functools.cache
def _libseccomp_version() -> str:
    """Part of the cache key: a newer libseccomp knows more syscall names, so builds another
    filter from the same profile."""

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    library = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    library.seccomp_version.restype = ctypes.POINTER(Version)
    found = library.seccomp_version().contents
    return f"{found.major}.{found.minor}.{found.micro}"


def _cached_bpf(oci: Mapping[str, Any], cache_dir: Path) -> bytes:
    canonical = json.dumps([_libseccomp_version(), oci], sort_keys=True, separators=(",", ":")).encode()
    cached = cache_dir / f"{hashlib.sha256(canonical).hexdigest()}.bpf"
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    from kernel.seccomp_bpf import compile_bpf  # only on a cache miss: libseccomp's loading costs ~40 ms

    bpf = compile_bpf(oci)
    # Concurrent starts may compile the same filter at once: the contents are the same whoever
    # wins; flushed first, as a renamed but empty filter would be served to every later container.
    write_durably(cached, bpf, f".{cached.stem}.")
    return bpf


