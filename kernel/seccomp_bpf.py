"""Compile an OCI `linux.seccomp` object into the raw BPF crun takes in its
`run.oci.seccomp_bpf_data` annotation, with libseccomp (through pyseccomp). Imported only when
kernel.seccomp's cache misses: loading libseccomp (pyseccomp runs `ldconfig` to find it) costs
~40 ms that every other CLI run should not pay."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyseccomp

from kernel.seccomp import SeccompError

_ACTIONS: dict[str, int] = {
    "SCMP_ACT_ALLOW": pyseccomp.ALLOW,
    "SCMP_ACT_KILL": pyseccomp.KILL,
    "SCMP_ACT_KILL_THREAD": pyseccomp.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": pyseccomp.KILL_PROCESS,
    "SCMP_ACT_TRAP": pyseccomp.TRAP,
    "SCMP_ACT_LOG": pyseccomp.LOG,
}
# Actions whose return value is the entry's errnoRet (EPERM when absent, as in runc and crun).
_ACTIONS_WITH_ERRNO = {"SCMP_ACT_ERRNO": pyseccomp.ERRNO, "SCMP_ACT_TRACE": pyseccomp.TRACE}

_OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": pyseccomp.NE,
    "SCMP_CMP_LT": pyseccomp.LT,
    "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_EQ": pyseccomp.EQ,
    "SCMP_CMP_GE": pyseccomp.GE,
    "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}

_ARCHES: dict[str, int] = {
    f"SCMP_ARCH_{name}": token for name, token in vars(pyseccomp.Arch).items() if name.isupper()
}

# What libseccomp answers for a syscall name it does not know (__NR_SCMP_ERROR).
_UNKNOWN_SYSCALL = -1


def compile_bpf(oci: Mapping[str, Any]) -> bytes:
    """Raw BPF (an array of 8-byte sock_filter) for an OCI `linux.seccomp` object, built as crun
    builds it, so that the bytes equal what crun would load itself.

    The filter's NO_NEW_PRIVS attribute is left alone: libseccomp applies it only when it loads
    a filter, never to exported bytes, and the runtime decides no_new_privs per container."""
    default_action = _action(oci["defaultAction"], oci.get("defaultErrnoRet"))
    syscall_filter = pyseccomp.SyscallFilter(default_action)
    for arch in oci.get("architectures") or []:
        _add_arch(syscall_filter, arch)
    for entry in oci.get("syscalls") or []:
        action = _action(entry["action"], entry.get("errnoRet"))
        # libseccomp refuses a rule that repeats the default action (EACCES); it is a no-op.
        if action != default_action:
            _add_rules(syscall_filter, action, entry["names"], entry.get("args") or [])
    return _export(syscall_filter)


def _action(name: str, errno_ret: int | None) -> int:
    if name in _ACTIONS_WITH_ERRNO:
        return _ACTIONS_WITH_ERRNO[name](errno.EPERM if errno_ret is None else errno_ret)
    if errno_ret is not None:
        raise SeccompError(f"errnoRet is set for action {name}, which returns no errno")
    if name not in _ACTIONS:
        raise SeccompError(f"unknown seccomp action {name!r}")
    return _ACTIONS[name]


def _add_arch(syscall_filter: pyseccomp.SyscallFilter, name: str) -> None:
    if name not in _ARCHES:
        raise SeccompError(f"unknown seccomp architecture {name!r}")
    try:
        syscall_filter.add_arch(_ARCHES[name])
    except OSError as error:
        # The native architecture is in every new filter already.
        if error.errno != errno.EEXIST:
            raise


def _add_rules(
    syscall_filter: pyseccomp.SyscallFilter,
    action: int,
    names: Sequence[str],
    args: Sequence[Mapping[str, Any]],
) -> None:
    """One rule per syscall name. A name this libseccomp does not know is skipped, as runc and
    crun skip it: profiles list syscalls newer than the library, and those stay denied."""
    for name in names:
        number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
        if number == _UNKNOWN_SYSCALL:
            continue
        for conditions in _condition_groups(args):
            syscall_filter.add_rule(action, number, *conditions)


def _condition_groups(args: Sequence[Mapping[str, Any]]) -> list[list[pyseccomp.Arg]]:
    """The comparisons of one entry, grouped into rules. libseccomp refuses two comparisons on
    the same argument in one rule (EINVAL); runc and crun then add one rule per comparison,
    which ORs them, and so must we to produce the filter they would."""
    conditions = [_condition(arg) for arg in args]
    indexes = [arg["index"] for arg in args]
    if len(set(indexes)) == len(indexes):
        return [conditions]
    return [[condition] for condition in conditions]


def _condition(arg: Mapping[str, Any]) -> pyseccomp.Arg:
    """OCI's value and valueTwo are libseccomp's datum_a and datum_b: for MASKED_EQ, the mask and
    the value the masked argument must equal."""
    if arg.get("op") not in _OPERATORS:
        raise SeccompError(f"unknown seccomp operator {arg.get('op')!r}")
    return pyseccomp.Arg(arg["index"], _OPERATORS[arg["op"]], arg["value"], arg.get("valueTwo", 0))


def _export(syscall_filter: pyseccomp.SyscallFilter) -> bytes:
    """libseccomp exports only to a file descriptor; a memfd keeps it off the disk."""
    with os.fdopen(os.memfd_create("seccomp-bpf"), "w+b") as exported:
        syscall_filter.export_bpf(exported)
        exported.seek(0)
        return exported.read()
