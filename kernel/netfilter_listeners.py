"""Sockets listening in the caller's network namespace, with the process that holds each.

A published port DNATs before local delivery, so a host process listening on that port silently
receives none of its traffic: the firewall controller refuses to publish a port a process holds
(a conflict naming the process), and names a process that bound a port after we published it
(an intruder, in `status`). They are asked of sock_diag (NETLINK_SOCK_DIAG, as `ss` does), in
the caller's network namespace, for listening TCP and unconnected UDP sockets only: the kernel
then never walks its established-connection hash, which /proc/net/tcp walks whole (measured:
2.5 ms on an idle host against 0.06 ms, and ~10% of a watch agent's repair among a thousand
containers); a kernel without inet_diag is read through /proc/net/{tcp,tcp6,udp,udp6}, the
same sockets as text. The owning process is found by the socket inode among /proc/<pid>/fd
links, a walk of every fd on the host, so it is only done for the listeners a message must
name (`with_holders`).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from kernel import rtnl_wire as wire

PROC = Path("/proc")

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"
"""A bound UDP socket that is not connect()ed shows as TCP_CLOSE: it receives from anyone."""

_TABLES = (("tcp", "tcp", _TCP_LISTEN), ("tcp6", "tcp", _TCP_LISTEN),
           ("udp", "udp", _UDP_UNCONNECTED), ("udp6", "udp", _UDP_UNCONNECTED))

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_DIAG_QUERIES = tuple((family, number, protocol, 1 << int(state, 16))
                      for number, protocol, state in ((socket.IPPROTO_TCP, "tcp", _TCP_LISTEN),
                                                      (socket.IPPROTO_UDP, "udp", _UDP_UNCONNECTED))
                      for family in (socket.AF_INET, socket.AF_INET6))
"""(address family, IP protocol, our protocol name, the states asked for) of each dump, in the
order of _TABLES."""
_DIAG_REQUEST = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: family, protocol, extensions, states, no sockid
_DIAG_PORT = struct.Struct("!H")  # inet_diag_msg.id.idiag_sport, at offset 4
_DIAG_INODE = struct.Struct("=I")  # inet_diag_msg.idiag_inode, at offset 68


@dataclass(frozen=True)
class Listener:
    protocol: str  # "tcp" | "udp"
    address: IPv4Address | IPv6Address
    port: int
    inode: int
    pid: int | None = None  # None when no visible process holds the socket, or not looked up
    command: str | None = None

    def describe(self) -> str:
        who = f"{self.command} (pid {self.pid})" if self.pid is not None else "an unknown process"
        where = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{who} listening on {where}:{self.port}/{self.protocol}"


def _address(hex_address: str) -> IPv4Address | IPv6Address:
    """The kernel prints each 32-bit word of the (network order) address with %08X in host byte
    order: repack the words natively to get the network-order bytes back."""
    words = [int(hex_address[i:i + 8], 16) for i in range(0, len(hex_address), 8)]
    return ip_address(struct.pack(f"={len(words)}I", *words))


def _parse_table(text: str, protocol: str, state: str) -> list[Listener]:
    listeners = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != state:
            continue
        hex_address, hex_port = fields[1].split(":")
        listeners.append(Listener(protocol, _address(hex_address), int(hex_port, 16), int(fields[9])))
    return listeners


def _socket_holders(inodes: set[int], proc: Path) -> dict[int, tuple[int, str]]:
    """inode -> (lowest pid, comm) for the given socket inodes, in one walk of /proc/*/fd."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    holders: dict[int, tuple[int, str]] = {}
    pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    for pid in pids:
        if len(holders) == len(wanted):
            break
        try:
            fds = os.listdir(proc / str(pid) / "fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                inode = wanted.get(os.readlink(proc / str(pid) / "fd" / fd))
            except OSError:
                continue
            if inode is not None and inode not in holders:
                holders[inode] = (pid, _comm(proc, pid))
    return holders


def _comm(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


_pass = threading.local()
"""The listeners read by this thread's pass under way (`one_read`)."""


@contextmanager
def one_read() -> Iterator[None]:
    """Within it, read_listeners() (of /proc) reads the tables once for this thread: the
    controllers observing one pass (the firewall's conflicts, the proxies) share one read."""
    _pass.found = None
    try:
        yield
    finally:
        del _pass.found


def read_listeners(proc: Path = PROC) -> tuple[Listener, ...]:
    """Every listening TCP socket and unconnected bound UDP socket of this namespace, without
    the process holding it (`with_holders`)."""
    shared = proc == PROC and hasattr(_pass, "found")
    if shared and _pass.found is not None:
        return _pass.found
    found = _read(proc)
    if shared:
        _pass.found = found
    return found


def _read(proc: Path) -> tuple[Listener, ...]:
    if proc == PROC:
        try:
            return _asked_of_sock_diag()
        except (OSError, wire.DumpInterrupted):  # no inet_diag (or udp_diag) here: the text tables
            pass
    return _read_tables(proc)


def _asked_of_sock_diag() -> tuple[Listener, ...]:
    found: list[Listener] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as sock:
        for family, number, protocol, states in _DIAG_QUERIES:
            size = 4 if family == socket.AF_INET else 16
            for answer in wire.dump(sock, SOCK_DIAG_BY_FAMILY, _DIAG_REQUEST.pack(family, number, 0, states)):
                found.append(Listener(protocol, ip_address(answer[8:8 + size]), _DIAG_PORT.unpack_from(answer, 4)[0],
                                      _DIAG_INODE.unpack_from(answer, 68)[0]))
    return tuple(found)


def _read_tables(proc: Path) -> tuple[Listener, ...]:
    found: list[Listener] = []
    for table, protocol, state in _TABLES:
        try:
            found += _parse_table((proc / "net" / table).read_text(), protocol, state)
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return tuple(found)


def with_holders(listeners: tuple[Listener, ...], slots: Collection[tuple[str, int]],
                 proc: Path = PROC) -> tuple[Listener, ...]:
    """The listeners, those on one of `slots` ((protocol, port)) with the process holding
    them: one walk of /proc/*/fd, none when no listener sits on those slots."""
    wanted = {s.inode for s in listeners if s.inode and s.pid is None and (s.protocol, s.port) in slots}
    if not wanted:
        return listeners
    holders = _socket_holders(wanted, proc)
    return tuple(replace(s, pid=holders[s.inode][0], command=holders[s.inode][1]) if s.inode in holders else s
                 for s in listeners)
