"""Named network namespaces under /run/netns, as iproute2 keeps them (so `ip netns exec`
works for users), and netlink sockets inside them.

A socket inside a namespace is created in a short-lived thread that setns()es first: the
socket stays in the namespace it was created in, and the main thread keeps its own. This
costs well under 1 ms against ~17 ms for pyroute2's `IPRoute(netns=...)`, which forks a helper.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from kernel import crashpoints, rtnl_wire, sysctl
from kernel.netlink import Netlink
from kernel.rtnl_dump import LinkDump
from specs import names as marks

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(Exception):
    pass


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def sandboxes(among: Collection[tuple[str, str]] | None = None) -> dict[str, tuple[str, str]]:
    """Our sandbox namespaces, by name, with the (stack, container) each is named for; of
    those `among` only, when given (looked up by name: a thousand others are not parsed)."""
    if among is None:
        return {name: owner for name in list_names() if (owner := marks.parse_netns_name(name))}
    return {name: owner for owner in among if exists(name := marks.netns_name(*owner))}


def exists(name: str) -> bool:
    """Whether a namespace (or a file left of one by a crash) has this name: one lstat, where
    listing /run/netns beside a thousand sandboxes costs ~0.7 ms."""
    return os.path.lexists(path_of(name))


def path_of(name: str) -> str:
    return f"{NETNS_DIR}/{name}"  # a Path interns its parts: a thousand names kept for good


def _ip_batch(commands: Sequence[str]) -> str:
    """One `ip -force -batch` for many namespace operations; returns stderr for the caller to
    judge per name (-force keeps going past a failed line)."""
    crashpoints.step("ip-netns")
    proc = subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"{c}\n" for c in commands),
                          capture_output=True, text=True)
    return proc.stderr


def is_namespace(name: str) -> bool:
    """Whether the file holds a namespace: `ip netns add` creates the file, then bind-mounts the
    namespace on it; a crash in between leaves a plain file on the tmpfs."""
    try:
        return os.stat(NETNS_DIR / name).st_dev != os.stat(NETNS_DIR).st_dev
    except FileNotFoundError:
        return False


def add(names: Sequence[str]) -> None:
    """Create namespaces (with `lo` up); one that already exists counts as created, a file left
    without its namespace is replaced."""
    if not names:
        return
    stale = [f"netns del {n}" for n in names if (NETNS_DIR / n).exists() and not is_namespace(n)]
    errors = _ip_batch(stale + [f"netns add {n}" for n in names])
    missing = [n for n in names if not is_namespace(n)]
    if missing:
        raise NetnsError(f"could not create network namespace(s) {', '.join(missing)}: {errors.strip()}")


def delete(names: Sequence[str]) -> None:
    """Remove namespaces; processes still inside keep theirs alive until they exit."""
    if not names:
        return
    errors = _ip_batch([f"netns del {n}" for n in names])
    left = [n for n in names if (NETNS_DIR / n).exists()]
    if left:
        raise NetnsError(f"could not delete network namespace(s) {', '.join(left)}: {errors.strip()}")


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _sockets_in(paths: Sequence[str]) -> list[socket.socket | OSError]:
    """A netlink socket in each namespace, made by one worker thread that setns()es into each in
    turn (a thread per namespace costs ~0.7 ms; this ~0.05 ms). A path that cannot be entered
    (gone, or a file left without its namespace by a crash) gives its error instead."""
    results: list[socket.socket | OSError] = []

    def enter_and_open() -> None:
        for path in paths:
            try:
                _setns(path)
                results.append(rtnl_wire.new_socket())
            except OSError as exc:
                results.append(exc)

    worker = threading.Thread(target=enter_and_open)
    worker.start()
    worker.join()
    return results


def dumps(names: Sequence[str]) -> Iterator[tuple[str, LinkDump | None]]:
    """One dump of each named namespace, one at a time (the caller keeps what it needs of each:
    a thousand whole dumps held at once were ~1 MiB); None for one that cannot be entered."""
    sockets = _sockets_in([path_of(n) for n in names])
    try:
        for name, sock in zip(names, sockets):
            if isinstance(sock, OSError):
                yield name, None
                continue
            with sock:
                dump = Netlink(sock).dump()
            yield name, dump
    finally:  # a generator left early: the sockets it did not reach (closing twice is harmless)
        for sock in sockets:
            if not isinstance(sock, OSError):
                sock.close()


def write_sysctl(name: str, value: str, *parts: str) -> None:
    """Write a sysctl of the named namespace."""
    write_sysctls(name, {parts: value})


def write_sysctls(name: str, values: Mapping[tuple[str, ...], str]) -> None:
    """Write sysctls of the named namespace, in order, each value by its key's path parts.
    /proc/sys/net shows the namespace of the thread that opens it, so one worker thread
    setns()es first, as for sockets. The first failure stops the writes; a write's names its
    /proc/sys file."""
    failures: list[OSError] = []

    def enter_and_write() -> None:
        try:
            _setns(path_of(name))
            for parts, value in values.items():
                try:
                    sysctl.write(value, *parts)
                except OSError as exc:  # a write's error names no file (EINVAL)
                    raise OSError(exc.errno, exc.strerror, str(sysctl.PROC_SYS.joinpath(*parts))) from exc
        except OSError as exc:
            failures.append(exc)

    worker = threading.Thread(target=enter_and_write)
    worker.start()
    worker.join()
    if failures:
        raise failures[0]


@contextmanager
def netlink_in(name: str) -> Iterator[Netlink]:
    """A netlink socket inside the named namespace."""
    sock = _sockets_in([path_of(name)])[0]
    if isinstance(sock, OSError):
        raise NetnsError(str(sock))
    netlink = Netlink(sock)
    try:
        yield netlink
    finally:
        netlink.close()


@contextmanager
def open_fd(name: str) -> Iterator[int]:
    """An fd of the namespace, e.g. to create a veth peer directly inside it."""
    fd = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)
