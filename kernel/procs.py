"""Processes as the kernel shows them in /proc: which live in a given network namespace, and
their start times (pid + start time identifies a process; a pid alone can be reused)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kernel.pseudofiles import read_bytes


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start_time: int  # clock ticks after boot, /proc/PID/stat field 22
    comm: str


def read_proc(pid: int) -> Proc | None:
    try:
        raw = read_bytes(f"/proc/{pid}/stat").decode(errors="replace")
    except OSError:
        return None
    # comm is in parentheses and may itself contain spaces or ')'; split after the last ')'.
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has finished: it is no longer running anything
        return None
    return Proc(pid=pid, ppid=int(fields[1]), start_time=int(fields[19]), comm=comm)


def last_argument(pid: int) -> str | None:
    """The last word of a process's command line; None when it is gone (or a kernel thread)."""
    try:
        words = read_bytes(f"/proc/{pid}/cmdline").rstrip(b"\0")
    except OSError:
        return None
    return words.rsplit(b"\0", 1)[-1].decode(errors="replace") if words else None


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _is_namespace_init(pid: int) -> bool:
    """PID 1 of a nested pid namespace (`NSpid: <host pid> 1`): a container's init, as opposed
    to the launcher that waits for it from the parent namespace."""
    try:
        status = read_bytes(f"/proc/{pid}/status")
    except OSError:
        return False
    start = status.find(b"\nNSpid:")
    if start < 0:
        return False
    levels = status[start + 7:status.find(b"\n", start + 1)].split()
    return len(levels) > 1 and levels[-1] == b"1"


def user_namespace_members() -> list[int]:
    """One process in each user namespace other than ours that a process is in now: our
    containers' inits and anyone's (a container's, `unshare --user`'s, systemd's
    `PrivateUsers=`), with or without a pid namespace of its own. A stat per process."""
    ours = os.stat("/proc/self/ns/user").st_ino
    members: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                inode = os.stat(f"/proc/{entry.name}/ns/user").st_ino
            except OSError:
                continue  # gone, or a kernel thread's
            if inode != ours:
                members.setdefault(inode, int(entry.name))
    return list(members.values())


def inits_by_netns(inodes: Iterable[int], likely: Iterable[int] = (), everywhere: bool = True) -> Mapping[int, Proc]:
    """For each network namespace inode, the init of the container inside it: looked for among
    the `likely` pids first (those our records name), then, `everywhere`, in one pass over /proc
    for the namespaces still without one (a start interrupted before its record, a lost store,
    a container that is not running: a thousand processes' stat each)."""
    wanted = set(inodes)
    result: dict[int, Proc] = {}
    tried = set(likely)

    def look(pids: Iterable[int]) -> None:
        for pid in pids:
            if len(result) == len(wanted):
                return
            try:
                inode = os.stat(f"/proc/{pid}/ns/net").st_ino
            except OSError:
                continue
            if inode in wanted and inode not in result and _is_namespace_init(pid):
                proc = read_proc(pid)
                if proc is not None:
                    result[inode] = proc

    look(sorted(tried))
    if everywhere and len(result) < len(wanted):
        look(pid for e in os.scandir("/proc") if e.name.isdigit() and (pid := int(e.name)) not in tried)
    return result


def alive(pid: int, start_time: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.start_time == start_time


def bounding_set(pid: int | str = "self") -> int:
    """CapBnd of /proc/PID/status: no process we start can hold a capability outside it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return 0
