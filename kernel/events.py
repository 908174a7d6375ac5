"""Kernel events for the `reconcile watch` agent: link/address/route changes in the agent's own
namespace and in every watched named namespace (one rtnetlink socket each: a socket only sees
its own namespace), iptables-nft changes (one nf_tables socket, whose every message also feeds
the ledger of what each nf_tables generation changed in our nftables table:
kernel/nft_changes.py), and process exits (a pidfd each), all multiplexed by one selector loop
in the caller's thread.

Why it is built this way:
- A socket pins the namespace it was created in: while we hold it, `ip netns del` only removes
  the name and the namespace (with its links) lives on. So /run/netns is watched with inotify and
  the socket of a deleted name is closed at once (NetnsGone), letting the kernel tear it down.
- The link-name cache of each namespace is filled by a dump sent on the subscribed socket
  itself: answers (our own port id) and notifications (anyone else's) interleave in arrival
  order, so no change between the dump and the subscription is lost.
- Sockets are opened, and pidfds taken, in the caller of watch_*: on return the kernel is
  already queueing events for them. Selector changes and every callback happen in the loop
  thread (handed over through a self-pipe), so on_event needs no locking against itself.
- One shared 64 KiB receive buffer for all sockets, nothing per socket in Python; the kernel
  buffers of the busy sockets (host, nf_tables) are raised so a flush of 1000 rules fits, and an
  overflow anyway is reported (Overflow) rather than hidden.

File descriptors: 6 of its own (epoll, self-pipe, inotify, host and nf_tables sockets) + one per
watched namespace + one per watched process; 1000 + 1000 need RLIMIT_NOFILE above 2006.
"""

from __future__ import annotations

import ctypes
import errno
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Collection, Iterable

from kernel import netns
from kernel import rtnl_wire as wire
from kernel.events_wire import (
    Event,
    ExitEvent,
    LinkEvent,
    LinkNames,
    NetnsGone,
    Overflow,
    RuleEvent,
    messages,
    remember_link,
    route_event,
    rule_event,
)
from kernel.nft_changes import NftChanges
from kernel.rtnl_dump import RTM_GETLINK
from kernel.runtime import ProcessHandle, open_pidfd

__all__ = ["Event", "ExitEvent", "KernelEvents", "LinkEvent", "NetnsGone", "Overflow", "RuleEvent"]

RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
ROUTE_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SO_RCVBUFFORCE = 33
BUSY_SOCKET_BUFFER = 8 << 20
"""Kernel receive buffer of the host and nf_tables sockets: a flush of 1000 DNAT rules queues
~1000 DELRULE messages at once. Kernel memory is only used while messages wait."""

IN_MOVED_FROM, IN_DELETE, IN_Q_OVERFLOW, IN_IGNORED = 0x40, 0x200, 0x4000, 0x8000
_INOTIFY_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, name length
_libc = ctypes.CDLL(None, use_errno=True)


def _raise_receive_buffer(sock: socket.socket) -> None:
    """SO_RCVBUFFORCE passes net.core.rmem_max (needs CAP_NET_ADMIN); else the capped kind."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUSY_SOCKET_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUSY_SOCKET_BUFFER)


def _read_datagrams(sock: socket.socket, buffer: bytearray,
                    on_loss: Callable[[], None] | None = None) -> Iterable[bytes | None]:
    """Every datagram waiting on a non-blocking socket, then None if the kernel dropped some
    (ENOBUFS). The drop is reported only once the queue is drained: until then the socket stays
    congested and the kernel drops more without telling, so a resync must start after that.
    `on_loss` is called as soon as the drop is seen: the kernel reports it before any datagram
    still queued, so what was read before it is whole, and what follows may have gaps."""
    overflowed = False
    while True:
        try:
            size = sock.recv_into(buffer)
        except BlockingIOError:
            if overflowed:
                yield None
            return
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            if on_loss is not None and not overflowed:
                on_loss()
            overflowed = True
            continue
        yield bytes(buffer[:size])


class _Socket:
    sock: socket.socket

    def fileno(self) -> int:
        return self.sock.fileno()  # -1 once closed

    def close(self) -> None:
        self.sock.close()


class _Fd:
    fd: int

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        os.close(self.fd)
        self.fd = -1


DUMP_RETRIES = 3
"""Failed link dumps in a row retried at once; then the next notification brings another."""


class _RouteSource(_Socket):
    """The rtnetlink socket of one namespace and its ifindex -> (name, alias) cache."""

    def __init__(self, sock: socket.socket, netns_name: str | None, inode: int | None) -> None:
        self.sock, self.netns, self.inode = sock, netns_name, inode
        sock.bind((0, ROUTE_GROUPS))
        sock.setblocking(False)
        self.port: int = sock.getsockname()[0]
        self.names: LinkNames = {}
        self.dumping = self.stale = False
        self.failed_dumps = 0  # in a row
        self._dump_links()

    def _dump_links(self) -> None:
        """Fill the cache. The answers carry our own port id, so read() tells them from
        notifications (which carry the changer's); one dump at a time per socket."""
        body = wire.IFINFO.pack(0, 0, 0, 0, 0)
        self.sock.send(wire.HEADER.pack(wire.HEADER.size + len(body), RTM_GETLINK,
                                        wire.NLM_F_REQUEST | wire.NLM_F_DUMP, 0, 0) + body)
        self.dumping, self.stale = True, False

    def read(self, buffer: bytearray) -> Iterable[Event]:
        """Events of the waiting datagrams; after an overflow (or a failed dump), a new dump
        once the queue is drained."""
        heard = False  # an overflow or a notification: more than our dump's answers
        for data in _read_datagrams(self.sock, buffer):
            if data is None:
                self.stale = heard = True
                yield Overflow(self.netns, "route")
                continue
            for kind, port, body in messages(data):
                if port == self.port:
                    self._dump_answer(kind, body)
                    continue
                heard = True
                event = route_event(self.netns, kind, body, self.names)
                if event is not None:
                    if event.what == "link":
                        remember_link(self.names, kind, body)
                    yield event
        if self.wants_dump(heard):
            self._dump_links()

    def _dump_answer(self, kind: int, body: bytes) -> None:
        """One answer to our link dump: a link to remember, or its end. A dump that failed, at
        once (NLMSG_ERROR) or part way (an errno in NLMSG_DONE), leaves the cache stale."""
        if kind in (wire.NLMSG_DONE, wire.NLMSG_ERROR):
            self.dumping = False
            failed = kind == wire.NLMSG_ERROR or wire.done_errno(body) > 0
            self.failed_dumps = self.failed_dumps + 1 if failed else 0
            self.stale |= failed
        else:
            remember_link(self.names, kind, body)

    def wants_dump(self, heard: bool) -> bool:
        """Whether a stale cache is dumped again now: at once after an overflow, a notification
        or one of the first DUMP_RETRIES failed dumps in a row; a dump that keeps failing (a
        link too large for any buffer) waits for the kernel's next word, instead of spinning."""
        return self.stale and not self.dumping and (heard or self.failed_dumps <= DUMP_RETRIES)


class _NftablesSource(_Socket):
    """The nf_tables notification socket of the agent's namespace (where iptables-nft writes);
    every message also goes to `changes`, the ledger of what each generation changed in our
    nftables table."""

    def __init__(self, changes: NftChanges | None) -> None:
        self.changes = changes
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        _raise_receive_buffer(self.sock)
        self.sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))

    def read(self, buffer: bytearray) -> Iterable[Event]:
        for data in _read_datagrams(self.sock, buffer, self.changes.lost if self.changes is not None else None):
            if data is None:
                if self.changes is not None:
                    self.changes.overflowed()
                yield Overflow(None, "nftables")
                continue
            for kind, _port, body in messages(data):
                if self.changes is not None:
                    self.changes.notification(kind, body)
                event = rule_event(kind, body)
                if event is not None:
                    yield event


class _PidWatch(_Fd):
    """A pidfd: readable once the process has exited."""

    def __init__(self, key: tuple[int, int], fd: int) -> None:
        self.key, self.fd = key, fd


class _NetnsDirectory(_Fd):
    """inotify on /run/netns, added once the directory exists (iproute2 creates it lazily)."""

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watching = False

    def watch(self) -> None:
        if not self.watching:
            self.watching = _libc.inotify_add_watch(
                self.fd, str(netns.NETNS_DIR).encode(), IN_DELETE | IN_MOVED_FROM) >= 0

    def removed(self) -> set[str] | None:
        """Names removed since the last read; None when every name must be checked (the queue
        overflowed, or the directory itself went away)."""
        names: set[str] | None = set()
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return names
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(data, offset)
                start = offset + _INOTIFY_EVENT.size
                if mask & IN_IGNORED:
                    self.watching = False
                if mask & (IN_Q_OVERFLOW | IN_IGNORED):
                    names = None
                elif names is not None:
                    names.add(data[start:start + length].split(b"\0", 1)[0].decode())
                offset = start + length


_Watched = _RouteSource | _NftablesSource | _PidWatch


def _inodes(names: Iterable[str]) -> dict[str, int | None]:
    """The namespace each name holds now: None if gone, or not a mounted namespace (yet: `ip
    netns add` creates the file before it bind-mounts the namespace on it)."""
    try:
        directory = os.stat(netns.NETNS_DIR).st_dev
    except FileNotFoundError:
        return dict.fromkeys(names)
    inodes: dict[str, int | None] = {}
    for name in names:
        try:
            found = os.stat(netns.path_of(name))
        except FileNotFoundError:
            inodes[name] = None
            continue
        inodes[name] = found.st_ino if found.st_dev != directory else None
    return inodes


class KernelEvents:
    """Kernel events delivered to `on_event` from the thread that calls run()."""

    def __init__(self, on_event: Callable[[Event], None], nft_changes: NftChanges | None = None) -> None:
        self._on_event = on_event
        self._lock = threading.Lock()
        self._running = threading.Lock()  # held by run(): close() waits for the loop to end
        self._closed = threading.Event()
        self._pending: list[tuple[list[_Watched], list[_Watched], list[Event]]] = []
        self._namespaces: dict[str, _RouteSource] = {}
        self._pids: dict[tuple[int, int], _PidWatch | None] = {}  # None: exit already reported
        self._buffer = bytearray(wire.RECV_BUFFER)
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ, KernelEvents._run_pending)
        host, nftables = _RouteSource(wire.new_socket(), None, None), _NftablesSource(nft_changes)
        _raise_receive_buffer(host.sock)
        self._swap([], [host, nftables])
        self._netns_dir = _NetnsDirectory()
        self._selector.register(self._netns_dir, selectors.EVENT_READ, KernelEvents._namespaces_removed)
        self._own: list[_Socket | _Fd] = [host, nftables, self._netns_dir]

    def watch_namespaces(self, names: Collection[str], among: Collection[str] | None = None) -> None:
        """Watch exactly these named namespaces (of those `among`, when given: the watches of
        the others stay as they are). Thread-safe; on return the new ones' events are queued. A
        name that is not (yet) a namespace is skipped: call again once it exists. A name now
        holding another namespace (deleted and re-created) gets a fresh socket."""
        wanted = set(names)
        considered = None if among is None else set(among) | wanted
        with self._lock:
            self._netns_dir.watch()
            inodes = _inodes(wanted)
            dropped: list[_Watched] = [self._namespaces.pop(name) for name, source in list(self._namespaces.items())
                                       if (considered is None or name in considered)
                                       and inodes.get(name) != source.inode]
            new = sorted(n for n in wanted if n not in self._namespaces and inodes[n] is not None)
            opened: list[_Watched] = []
            for name, sock in zip(new, netns._sockets_in([netns.path_of(n) for n in new])):
                if not isinstance(sock, OSError):  # gone since: the next call retries it
                    self._namespaces[name] = _RouteSource(sock, name, inodes[name])
                    opened.append(self._namespaces[name])
            self._later(dropped, opened, [])

    def watch_pids(self, pids: Collection[tuple[int, int]], among: Collection[tuple[int, int]] | None = None) -> None:
        """Watch exactly these (pid, start time) processes (of those `among`, when given: the
        others stay watched as they are): each yields one ExitEvent when it ends, at once if it
        is already gone or its pid now belongs to another process."""
        wanted = set(pids)
        considered = None if among is None else set(among) | wanted
        with self._lock:
            def keep(key: tuple[int, int]) -> bool:
                return key in wanted or (considered is not None and key not in considered)

            dropped: list[_Watched] = [w for key, w in self._pids.items() if not keep(key) and w]
            self._pids = {key: w for key, w in self._pids.items() if keep(key)}
            exited: list[Event] = []
            opened: list[_Watched] = []
            for key in wanted - self._pids.keys():
                fd = open_pidfd(ProcessHandle(*key))
                watch = None if fd is None else _PidWatch(key, fd)
                self._pids[key] = watch
                if watch is None:
                    exited.append(ExitEvent(key[0]))
                else:
                    opened.append(watch)
            self._later(dropped, opened, exited)

    def run(self, stop: threading.Event) -> None:
        """Deliver events until `stop` is set (a helper thread wakes the loop when it is) or
        close() is called."""
        threading.Thread(target=self._wake_on, args=(stop,), daemon=True, name="events-stop").start()
        with self._running:
            while not stop.is_set() and not self._closed.is_set():
                for key, _mask in self._selector.select():
                    for event in key.data(self, key.fileobj):
                        self._on_event(event)

    def close(self) -> None:
        """Stop run() if it is still looping, wait for it to return, close every fd. From any
        thread but the loop's own (from on_event it would wait for itself)."""
        self._closed.set()
        self._wake()
        with self._running, self._lock:
            sources = [*self._own, *self._namespaces.values(), *(w for w in self._pids.values() if w)]
            self._namespaces.clear()
            self._pids.clear()
            for source in sources:
                if source.fileno() >= 0:
                    source.close()
            self._selector.close()
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        with self._lock:  # not after close(): the pipe's fd number may belong to another file
            if not self._closed.is_set():
                self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def _later(self, dropped: list[_Watched], opened: list[_Watched], events: list[Event]) -> None:
        """Hand selector changes and events found by watch_* to the loop thread; hold the lock."""
        self._pending.append((dropped, opened, events))
        self._wake()

    def _run_pending(self, _pipe: int) -> Iterable[Event]:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
        for dropped, opened, events in pending:
            self._swap(dropped, opened)
            yield from events

    def _swap(self, dropped: Iterable[_Watched], opened: Iterable[_Watched]) -> None:
        """Loop thread only: unregister and close what is dropped, register what is opened."""
        for source in dropped:
            if source.fileno() >= 0:
                self._selector.unregister(source)
                source.close()
        for source in opened:
            # The handler is the class's function, called with the loop and the source: one
            # object for every source (a bound method and a partial each: ~0.5 MiB at 2,000).
            handler = KernelEvents._exited if isinstance(source, _PidWatch) else KernelEvents._read
            self._selector.register(source, selectors.EVENT_READ, handler)

    def _read(self, source: _RouteSource | _NftablesSource) -> Iterable[Event]:
        return source.read(self._buffer) if source.fileno() >= 0 else ()

    def _exited(self, watch: _PidWatch) -> Iterable[Event]:
        if watch.fileno() < 0:  # dropped earlier in the same round of the loop
            return ()
        with self._lock:
            if self._pids.get(watch.key) is watch:
                self._pids[watch.key] = None
        self._swap([watch], [])
        return [ExitEvent(watch.key[0])]

    def _namespaces_removed(self, _directory: _NetnsDirectory) -> Iterable[Event]:
        removed = self._netns_dir.removed()
        with self._lock:
            inodes = _inodes(self._namespaces if removed is None else removed & self._namespaces.keys())
            gone = {name: self._namespaces.pop(name) for name, inode in inodes.items()
                    if inode != self._namespaces[name].inode}
        self._swap(gone.values(), [])
        return [NetnsGone(name) for name in gone]
