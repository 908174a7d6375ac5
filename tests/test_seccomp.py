"""kernel/seccomp.py: Moby profile -> OCI seccomp object (pure, table-driven, on a hand-written
profile), OCI object -> BPF (libseccomp), the BPF cache, and what the real kernel does with the
filter built from the installed Docker profile (in a forked child, so the test process stays
unconfined)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from kernel import seccomp, seccomp_bpf
from kernel.seccomp import SeccompError, filter_for, load_profile, oci_seccomp
from kernel.seccomp_bpf import compile_bpf

DOCKER_CAPS = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})
ADMIN_CAPS = DOCKER_CAPS | {"CAP_SYS_ADMIN"}

X86_64_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def entry(names: list[str], action: str = "SCMP_ACT_ALLOW", **fields: Any) -> dict[str, Any]:
    """A syscalls entry as Moby writes them: empty includes/excludes and comment by default."""
    return {"names": names, "action": action, "args": [], "comment": "", "includes": {},
            "excludes": {}, **fields}


PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64",
         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        entry(["read", "write"]),
        entry(["mount"], includes={"caps": ["CAP_SYS_ADMIN"]}),
        entry(["reboot"], includes={"caps": ["CAP_SYS_ADMIN", "CAP_SYS_BOOT"]}),
        entry(["clone"], args=[{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}],
              excludes={"caps": ["CAP_SYS_ADMIN"]}),
        entry(["arch_prctl"], includes={"arches": ["amd64", "x32"]}),
        entry(["cacheflush"], includes={"arches": ["arm", "arm64"]}),
        entry(["modify_ldt"], excludes={"arches": ["arm64"]}),
        entry(["ptrace"], args=None, includes={"minKernel": "4.8"}),
        entry(["uselib"], excludes={"minKernel": "5.0"}),
        entry(["clone3"], "SCMP_ACT_ERRNO", errnoRet=38, excludes={"caps": ["CAP_SYS_ADMIN"]},
              comment="ENOSYS so that libcs fall back to clone"),
    ],
}


def kept(caps: frozenset[str], arch: str = "x86_64", kernel: tuple[int, int] = (6, 1)) -> list[str]:
    return [name for call in oci_seccomp(PROFILE, caps, arch, kernel)["syscalls"]
            for name in call["names"]]


@pytest.mark.parametrize("caps, arch, kernel, expected", [
    pytest.param(DOCKER_CAPS, "x86_64", (6, 1),
                 ["read", "write", "clone", "arch_prctl", "modify_ldt", "ptrace", "clone3"],
                 id="docker-caps-amd64"),
    pytest.param(DOCKER_CAPS | {"CAP_SYS_ADMIN"}, "x86_64", (6, 1),
                 ["read", "write", "mount", "arch_prctl", "modify_ldt", "ptrace"],
                 id="excluded-cap-held-drops-fallbacks"),
    pytest.param(DOCKER_CAPS | {"CAP_SYS_ADMIN", "CAP_SYS_BOOT"}, "x86_64", (6, 1),
                 ["read", "write", "mount", "reboot", "arch_prctl", "modify_ldt", "ptrace"],
                 id="every-included-cap-held"),
    pytest.param(DOCKER_CAPS | {"CAP_SYS_BOOT"}, "x86_64", (6, 1),
                 ["read", "write", "clone", "arch_prctl", "modify_ldt", "ptrace", "clone3"],
                 id="one-of-two-included-caps"),
    pytest.param(DOCKER_CAPS, "aarch64", (6, 1),
                 ["read", "write", "clone", "cacheflush", "ptrace", "clone3"],
                 id="arm64-arches"),
    pytest.param(DOCKER_CAPS, "x86_64", (4, 8), ["read", "write", "clone", "arch_prctl",
                                                 "modify_ldt", "ptrace", "uselib", "clone3"],
                 id="minkernel-equal"),
    pytest.param(DOCKER_CAPS, "x86_64", (4, 4), ["read", "write", "clone", "arch_prctl",
                                                 "modify_ldt", "uselib", "clone3"],
                 id="kernel-below-minkernel"),
    pytest.param(frozenset(), "riscv64", (6, 1),
                 ["read", "write", "clone", "modify_ldt", "ptrace", "clone3"],
                 id="arch-without-archmap-entry"),
])
def test_entries_kept(caps: frozenset[str], arch: str, kernel: tuple[int, int],
                      expected: list[str]) -> None:
    assert kept(caps, arch, kernel) == expected


@pytest.mark.parametrize("arch, expected", [
    ("x86_64", X86_64_ARCHES),
    ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ("riscv64", []),
    ("sparc64", []),
])
def test_architectures_from_arch_map(arch: str, expected: list[str]) -> None:
    assert oci_seccomp(PROFILE, DOCKER_CAPS, arch, (6, 1))["architectures"] == expected


def test_output_is_oci_spelling_with_moby_conditions_dropped() -> None:
    oci = oci_seccomp(PROFILE, DOCKER_CAPS, "x86_64", (6, 1))
    assert list(oci) == ["defaultAction", "architectures", "syscalls"]
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO"
    by_name = {call["names"][0]: call for call in oci["syscalls"]}
    assert by_name["clone3"] == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    assert by_name["clone"] == {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [
        {"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]}
    assert by_name["ptrace"] == {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW"}


def test_default_errno_ret_kept() -> None:
    oci = oci_seccomp({**PROFILE, "defaultErrnoRet": 38}, DOCKER_CAPS, "x86_64", (6, 1))
    assert list(oci) == ["defaultAction", "defaultErrnoRet", "architectures", "syscalls"]
    assert oci["defaultErrnoRet"] == 38


def test_architectures_listed_instead_of_arch_map() -> None:
    profile = {**PROFILE, "archMap": None, "architectures": ["SCMP_ARCH_X86_64"]}
    assert oci_seccomp(profile, DOCKER_CAPS, "aarch64", (6, 1))["architectures"] == [
        "SCMP_ARCH_X86_64"]


@pytest.mark.parametrize("profile, message", [
    ({**PROFILE, "architectures": ["SCMP_ARCH_X86_64"]},
     '"architectures" and "archMap" are both set; use one of them'),
    ({**PROFILE, "syscalls": [entry(["read"], name="write")]},
     'a syscall entry sets both "name" and "names"; use one of them'),
    ({**PROFILE, "syscalls": [{"names": ["read"]}]},
     "the syscall entry for ['read'] has no \"action\""),
    ({**PROFILE, "syscalls": [entry(["read"], includes={"minKernel": "four"})]},
     "cannot parse kernel version 'four'"),
])
def test_invalid_profile_messages(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(SeccompError) as raised:
        oci_seccomp(profile, DOCKER_CAPS, "x86_64", (6, 1))
    assert str(raised.value) == message


def test_kernel_defaults_to_the_running_one() -> None:
    release = tuple(int(part) for part in os.uname().release.split(".")[:2])
    below = {**PROFILE, "syscalls": [entry(["ptrace"], includes={"minKernel": "%d.%d" % release})]}
    above = {**PROFILE, "syscalls": [entry(["ptrace"], includes={"minKernel": "%d.%d" % (
        release[0], release[1] + 1)})]}
    assert len(oci_seccomp(below, DOCKER_CAPS, "x86_64")["syscalls"]) == 1
    assert oci_seccomp(above, DOCKER_CAPS, "x86_64")["syscalls"] == []


# --- the installed Docker profile ---------------------------------------------------------

@pytest.fixture(scope="module")
def docker_profile() -> dict[str, Any]:
    if not seccomp.DEFAULT_PROFILE.exists():
        pytest.skip(f"{seccomp.DEFAULT_PROFILE} is not installed (scripts/setup.sh installs it)")
    return load_profile()


def allowed_names(oci: Mapping[str, Any]) -> set[str]:
    """Syscalls some rule allows, with or without argument conditions."""
    return {name for call in oci["syscalls"] if call["action"] == "SCMP_ACT_ALLOW"
            for name in call["names"]}


def test_real_profile_with_docker_caps(docker_profile: dict[str, Any]) -> None:
    oci = oci_seccomp(docker_profile, DOCKER_CAPS, "x86_64", (6, 1))
    allowed = allowed_names(oci)
    assert oci["architectures"] == X86_64_ARCHES
    assert {"read", "write", "getpid", "chroot", "ptrace"} <= allowed
    for denied in ("mount", "umount2", "unshare", "setns", "keyctl", "add_key", "bpf",
                   "perf_event_open", "init_module", "reboot", "clone3"):
        assert denied not in allowed, denied


def test_real_profile_ptrace_needs_kernel_4_8_without_sys_ptrace(
        docker_profile: dict[str, Any]) -> None:
    assert "ptrace" in allowed_names(oci_seccomp(docker_profile, DOCKER_CAPS, "x86_64", (4, 8)))
    assert "ptrace" not in allowed_names(oci_seccomp(docker_profile, DOCKER_CAPS, "x86_64", (4, 4)))
    assert "ptrace" in allowed_names(
        oci_seccomp(docker_profile, DOCKER_CAPS | {"CAP_SYS_PTRACE"}, "x86_64", (4, 4)))


def test_real_profile_with_sys_admin(docker_profile: dict[str, Any]) -> None:
    allowed = allowed_names(oci_seccomp(docker_profile, ADMIN_CAPS, "x86_64", (6, 1)))
    assert {"mount", "unshare", "setns", "umount2", "bpf", "clone3"} <= allowed
    assert {"keyctl", "init_module"}.isdisjoint(allowed)


def test_later_hardening_withdraws_io_uring_and_two_socket_families() -> None:
    """Moby's default since Debian 12's copy: no io_uring, no AF_ALG or AF_VSOCK socket; the
    other rules as they were, whatever they share an entry with."""
    profile = {**PROFILE, "syscalls": [
        entry(["read", "io_uring_setup", "socket", "io_uring_enter"]),
        entry(["io_uring_register"]),
        {"name": "socket", "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
        entry(["socket"], "SCMP_ACT_ERRNO", errnoRet=38, excludes={"caps": ["CAP_SYS_ADMIN"]}),
    ]}
    hardened = seccomp.with_later_hardening(profile)
    assert hardened["syscalls"] == [
        {**entry(["read"])},
        entry(["socket"], "SCMP_ACT_ERRNO", errnoRet=38, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        *({"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": value, "op": op}]}
          for value, op in ((38, "SCMP_CMP_LT"), (39, "SCMP_CMP_EQ"), (40, "SCMP_CMP_GT")))]
    assert seccomp.with_later_hardening(hardened) == hardened
    assert profile["syscalls"][0]["names"] == ["read", "io_uring_setup", "socket", "io_uring_enter"]  # untouched


def test_missing_profile_message(tmp_path: Path) -> None:
    with pytest.raises(SeccompError) as raised:
        load_profile(tmp_path / "none.json")
    assert str(raised.value) == (
        f"seccomp profile {tmp_path}/none.json: missing; scripts/setup.sh installs it")


@pytest.mark.parametrize("text, reason", [
    ("[]", 'not a Moby profile (no "defaultAction")'),
    ('{"syscalls": []}', 'not a Moby profile (no "defaultAction")'),
    ("{", "not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
])
def test_invalid_profile_file_messages(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "profile.json"
    path.write_text(text)
    with pytest.raises(SeccompError) as raised:
        load_profile(path)
    assert str(raised.value) == f"seccomp profile {path}: {reason}; scripts/setup.sh installs it"


# --- compiling ----------------------------------------------------------------------------

def oci(*syscalls: dict[str, Any], default: str = "SCMP_ACT_ERRNO") -> dict[str, Any]:
    return {"defaultAction": default, "architectures": X86_64_ARCHES, "syscalls": list(syscalls)}


@pytest.mark.parametrize("action", [
    "SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG",
])
def test_compile_every_action(action: str) -> None:
    bpf = compile_bpf(oci({"names": ["read"], "action": action}))
    assert bpf and len(bpf) % 8 == 0
    assert bpf != compile_bpf(oci())


@pytest.mark.parametrize("op", [
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
])
def test_compile_every_operator(op: str) -> None:
    args = [{"index": 1, "value": 0xFF, "valueTwo": 0x0F, "op": op}]
    bpf = compile_bpf(oci({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": args}))
    assert bpf and len(bpf) % 8 == 0


def test_errno_ret_is_in_the_filter() -> None:
    call = {"names": ["clone3"], "action": "SCMP_ACT_ERRNO"}
    assert compile_bpf(oci({**call, "errnoRet": 38}, default="SCMP_ACT_ALLOW")) != compile_bpf(
        oci(call, default="SCMP_ACT_ALLOW"))
    assert compile_bpf(oci(default="SCMP_ACT_ERRNO")) == compile_bpf(
        {**oci(default="SCMP_ACT_ERRNO"), "defaultErrnoRet": errno.EPERM})


def test_unknown_syscall_and_default_action_rules_are_skipped() -> None:
    read = {"names": ["read"], "action": "SCMP_ACT_ALLOW"}
    assert compile_bpf(oci(read, {"names": ["no_such_syscall"], "action": "SCMP_ACT_ALLOW"})) == (
        compile_bpf(oci(read)))
    assert compile_bpf(oci(read, {"names": ["write"], "action": "SCMP_ACT_ERRNO"})) == (
        compile_bpf(oci(read)))


def test_two_conditions_on_one_argument_become_two_rules() -> None:
    """libseccomp refuses them in one rule; runc and crun OR them, one rule each."""
    args = [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]
    one_rule_each = oci(*({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [arg]}
                          for arg in args))
    assert compile_bpf(oci({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                            "args": args})) == compile_bpf(one_rule_each)


@pytest.mark.parametrize("bad, message", [
    ({"defaultAction": "SCMP_ACT_FOO"}, "unknown seccomp action 'SCMP_ACT_FOO'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "errnoRet is set for action SCMP_ACT_ALLOW, which returns no errno"),
    (oci(default="SCMP_ACT_ALLOW") | {"architectures": ["SCMP_ARCH_VAX"]},
     "unknown seccomp architecture 'SCMP_ARCH_VAX'"),
    (oci({"names": ["read"], "action": "SCMP_ACT_ERRNO",
          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}, default="SCMP_ACT_ALLOW"),
     "unknown seccomp operator 'SCMP_CMP_ABOUT'"),
])
def test_compile_errors(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(SeccompError) as raised:
        compile_bpf(bad)
    assert str(raised.value) == message


def test_real_profile_compiles_to_whole_instructions(docker_profile: dict[str, Any]) -> None:
    bpf = compile_bpf(oci_seccomp(docker_profile, DOCKER_CAPS, platform.machine()))
    assert bpf and len(bpf) % 8 == 0


# --- the cache ----------------------------------------------------------------------------

@pytest.fixture
def small_profile(tmp_path: Path) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(PROFILE))
    return path


def test_cache_hit_reads_the_file_only(tmp_path: Path, small_profile: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = filter_for(DOCKER_CAPS, cache, small_profile)
    [cached] = cache.iterdir()
    mtime = cached.stat().st_mtime_ns

    def no_compiling(_: Mapping[str, Any]) -> bytes:
        raise AssertionError("compiled again on a cache hit")

    monkeypatch.setattr(seccomp_bpf, "compile_bpf", no_compiling)
    assert filter_for(DOCKER_CAPS, cache, small_profile) == first
    assert cached.stat().st_mtime_ns == mtime
    assert cached.read_bytes() == first


def test_cache_file_per_distinct_filter(tmp_path: Path, small_profile: Path) -> None:
    cache = tmp_path / "cache"
    docker = filter_for(DOCKER_CAPS, cache, small_profile)
    admin = filter_for(ADMIN_CAPS, cache, small_profile)
    # CAP_NET_ADMIN appears in no entry: same OCI object, same file.
    assert filter_for(DOCKER_CAPS | {"CAP_NET_ADMIN"}, cache, small_profile) == docker
    assert docker != admin
    assert sorted(path.suffix for path in cache.iterdir()) == [".bpf", ".bpf"]


def test_filter_for_names_the_profile_in_content_errors(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({**PROFILE, "defaultAction": "SCMP_ACT_FOO"}))
    with pytest.raises(SeccompError) as raised:
        filter_for(DOCKER_CAPS, tmp_path / "cache", path)
    assert str(raised.value) == f"seccomp profile {path}: unknown seccomp action 'SCMP_ACT_FOO'"


# --- the kernel enforcing the filter (x86_64 syscall numbers) -----------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
NR_SECCOMP, NR_KEYCTL, NR_GETPID, NR_SOCKET, NR_IO_URING_SETUP = 317, 250, 39, 41, 425
AF_INET, AF_ALG, AF_VSOCK, SOCK_STREAM, SOCK_SEQPACKET = 2, 38, 40, 1, 5
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0, -3
ADDR_NO_RANDOMIZE = 0x0040000


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def probes(missing_dir: Path) -> dict[str, Callable[[], int]]:
    """Each returns the C call's result (-1 with errno set on failure). mount targets a missing
    directory: without the filter it fails with ENOENT, so it can never change the host."""
    return {
        "getpid": lambda: _libc.syscall(NR_GETPID),
        "keyctl": lambda: _libc.syscall(NR_KEYCTL, ctypes.c_long(KEYCTL_GET_KEYRING_ID),
                                        ctypes.c_long(KEY_SPEC_SESSION_KEYRING), ctypes.c_long(0)),
        "mount": lambda: _libc.mount(b"none", str(missing_dir).encode(), b"tmpfs", 0, None),
        "unshare_user": lambda: _libc.unshare(CLONE_NEWUSER),
        "unshare_mount": lambda: _libc.unshare(CLONE_NEWNS),
        "personality_query": lambda: _libc.personality(ctypes.c_ulong(0xFFFFFFFF)),
        "personality_no_aslr": lambda: _libc.personality(ctypes.c_ulong(ADDR_NO_RANDOMIZE)),
        "socket_inet": lambda: _libc.syscall(NR_SOCKET, AF_INET, SOCK_STREAM, 0),
        "socket_alg": lambda: _libc.syscall(NR_SOCKET, AF_ALG, SOCK_SEQPACKET, 0),
        "socket_vsock": lambda: _libc.syscall(NR_SOCKET, AF_VSOCK, SOCK_STREAM, 0),
        # no parameters: EFAULT where the call is let through, never a ring
        "io_uring_setup": lambda: _libc.syscall(NR_IO_URING_SETUP, 1, None),
    }


def errnos_under_filter(bpf: bytes, tried: list[str], missing_dir: Path) -> dict[str, int]:
    """Fork, load `bpf` in the child as crun does (no_new_privs, then seccomp(2)), run the
    probes in order and report each one's errno (0: it worked) over a pipe."""
    calls = probes(missing_dir)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        report: dict[str, int] = {}
        try:
            os.close(reader)
            program = SockFprog(len(bpf) // 8, bpf)
            if (_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    or _libc.syscall(NR_SECCOMP, SECCOMP_SET_MODE_FILTER, 0,
                                     ctypes.byref(program)) != 0):
                report["load"] = ctypes.get_errno()
            else:
                for name in tried:
                    report[name] = ctypes.get_errno() if calls[name]() == -1 else 0
            os.write(writer, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        received = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(received)


kernel_x86_64 = pytest.mark.skipif(
    platform.machine() != "x86_64" or os.geteuid() != 0,
    reason="probes use x86_64 syscall numbers and need root (CAP_SYS_ADMIN for unshare/mount)")


@kernel_x86_64
def test_kernel_enforces_docker_default(docker_profile: dict[str, Any], tmp_path: Path) -> None:
    bpf = compile_bpf(oci_seccomp(docker_profile, DOCKER_CAPS, "x86_64"))
    tried = ["getpid", "keyctl", "mount", "personality_query", "personality_no_aslr",
             "unshare_user"]
    assert errnos_under_filter(bpf, tried, tmp_path / "missing") == {
        "getpid": 0, "keyctl": errno.EPERM, "mount": errno.EPERM, "personality_query": 0,
        "personality_no_aslr": errno.EPERM, "unshare_user": errno.EPERM}


@kernel_x86_64
def test_kernel_denies_what_moby_denied_later(docker_profile: dict[str, Any], tmp_path: Path) -> None:
    bpf = compile_bpf(oci_seccomp(seccomp.with_later_hardening(docker_profile), DOCKER_CAPS, "x86_64"))
    tried = ["socket_inet", "socket_alg", "socket_vsock", "io_uring_setup"]
    assert errnos_under_filter(bpf, tried, tmp_path / "missing") == {
        "socket_inet": 0, "socket_alg": errno.EPERM, "socket_vsock": errno.EPERM, "io_uring_setup": errno.EPERM}
    allow_all = compile_bpf(oci(default="SCMP_ACT_ALLOW"))  # the control: the EPERM is the filter's
    assert errnos_under_filter(allow_all, ["io_uring_setup"], tmp_path / "missing") == {"io_uring_setup": errno.EFAULT}


@kernel_x86_64
def test_kernel_without_filter_would_allow(tmp_path: Path) -> None:
    """The control: the EPERMs above come from the filter, not from the kernel."""
    allow_all = compile_bpf(oci(default="SCMP_ACT_ALLOW"))
    assert errnos_under_filter(allow_all, ["mount", "unshare_user"], tmp_path / "missing") == {
        "mount": errno.ENOENT, "unshare_user": 0}


@kernel_x86_64
def test_kernel_with_sys_admin_allows_unshare(docker_profile: dict[str, Any],
                                              tmp_path: Path) -> None:
    bpf = compile_bpf(oci_seccomp(docker_profile, ADMIN_CAPS, "x86_64"))
    assert errnos_under_filter(bpf, ["unshare_mount", "mount"], tmp_path / "missing") == {
        "unshare_mount": 0, "mount": errno.ENOENT}
