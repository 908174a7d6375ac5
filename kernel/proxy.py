"""Userland proxies: a host socket relayed to a container's by Debian's `socat`, for what the
kernel's NAT cannot serve. A port published on [::1] is one: a reply to ::1 can never come
back off a bridge (the kernel drops it, and IPv6 has no route_localnet), so, as Docker's
docker-proxy does, a process listens there and connects to the container itself.

One proxy is one socat process listening in the caller's network namespace: TCP forks a child
per connection (relaying until either side closes), UDP a child per datagram, which relays the
answers back until the flow has been idle for UDP_IDLE seconds. Children run as `nobody`
(socat's su=, after the listener is bound: a privileged port is bound as root).

Ownership mark: argv[0] is the owner's mark (see `start`), readable by a fresh process in
/proc/PID/cmdline; `running` finds every process of socat that carries a mark under a prefix, in
the caller's network namespace only (another namespace's ::1 is another host's), whose
listener runs as root (a user's process can wear any argv[0]). The rest of
argv says what the proxy does, so comparing argv compares the relay. Nothing else records a
proxy: a killed one is simply absent from the next observation, a lost state store loses none.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from kernel.netfilter_listeners import read_listeners
from kernel.procs import read_proc
from kernel.pseudofiles import read_bytes
from kernel.runtime import ProcessHandle, open_pidfd, terminate

SOCAT = "socat"  # Debian's socat
UDP_IDLE = 30
"""Seconds a UDP flow's child waits for more answers before it ends."""
START_TIMEOUT = 5.0
STOP_GRACE = 2.0
_SYSLOG = "-ly"
"""socat's errors (a container refusing a connection) go to the system log: a proxy outlives
the run that started it, so no pipe of ours may be its stderr."""


class ProxyError(Exception):
    pass


@dataclass(frozen=True)
class Relay:
    """What a proxy does: listen on [listen]:port, relay to [target]:target_port."""

    protocol: str  # "tcp" | "udp"
    listen: IPv6Address
    port: int
    target: IPv4Address | IPv6Address
    target_port: int

    def argv(self, mark: str) -> tuple[str, ...]:
        """socat's command line, argv[0] the mark."""
        family = "6" if self.target.version == 6 else "4"
        target = f"[{self.target}]" if self.target.version == 6 else str(self.target)
        where = f"{self.port},bind=[{self.listen}],fork,su=nobody"
        if self.protocol == "udp":
            return (mark, _SYSLOG, f"-T{UDP_IDLE}", f"UDP6-RECVFROM:{where}",
                    f"UDP{family}-SENDTO:{target}:{self.target_port}")
        return (mark, _SYSLOG, f"TCP6-LISTEN:{where},reuseaddr,backlog=128",
                f"TCP{family}:{target}:{self.target_port}")

    def describe(self) -> str:
        target = f"[{self.target}]" if self.target.version == 6 else str(self.target)
        return f"[{self.listen}]:{self.port}/{self.protocol} -> {target}:{self.target_port}"


@dataclass(frozen=True)
class RunningProxy:
    """A proxy found in /proc: its listening process and the children relaying its flows."""

    mark: str
    argv: tuple[str, ...]
    handle: ProcessHandle
    children: tuple[ProcessHandle, ...]
    sockets: frozenset[int]
    """Inodes of the sockets the listening process holds (the listener among them)."""


def has_ipv6_loopback() -> bool:
    """Whether ::1 is an address here (not on a host booted with ipv6.disable=1, nor with
    disable_ipv6 on lo): there is nothing for a proxy to listen on without it. Asked by binding
    to it, which the kernel allows only then: /proc/net/if_inet6 lists every link's address
    (0.5 ms to read beside a thousand veths, on every pass)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:  # EAFNOSUPPORT: no IPv6 at all; EADDRNOTAVAIL: ::1 is not here
        return False
    return True


def _cmdline(pid: str) -> bytes:
    try:
        return read_bytes(f"/proc/{pid}/cmdline")
    except OSError:
        return b""


def _marked(prefix: bytes) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(pid, argv) of every process of socat in our network namespace whose argv[0] starts with
    `prefix`: one read of cmdline per process, the checks after it only for those."""
    netns = os.stat("/proc/self/ns/net").st_ino
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        raw = _cmdline(entry.name)
        if not raw.startswith(prefix):
            continue
        try:
            if (os.path.basename(os.readlink(f"/proc/{entry.name}/exe")) != SOCAT
                    or os.stat(f"/proc/{entry.name}/ns/net").st_ino != netns):
                continue
        except OSError:  # gone, or a kernel thread
            continue
        yield int(entry.name), tuple(raw.rstrip(b"\0").decode(errors="replace").split("\0"))


def _as_root(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == 0
    except OSError:
        return False


def _sockets(pid: int) -> frozenset[int]:
    inodes = set()
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return frozenset(inodes)


def running(prefix: str) -> list[RunningProxy]:
    """Every proxy in this network namespace whose mark starts with `prefix`: a marked process
    whose parent is not one of the same mark listens, the others relay its flows. A listener
    runs as root (we start it so): a user's socat wearing our mark is not ours to stop."""
    found: dict[int, tuple[tuple[str, ...], ProcessHandle, int]] = {}
    for pid, argv in _marked(prefix.encode()):
        proc = read_proc(pid)
        if proc is not None:
            found[pid] = (argv, ProcessHandle(pid, proc.start_time), proc.ppid)
    proxies = []
    for pid, (argv, handle, ppid) in found.items():
        parent = found.get(ppid)
        if (parent is not None and parent[0] == argv) or not _as_root(pid):
            continue
        children = tuple(h for a, h, p in found.values() if p == pid and a == argv)
        proxies.append(RunningProxy(argv[0], argv, handle, children, _sockets(pid)))
    return proxies


def start(proxies: Sequence[tuple[str, Relay]]) -> list[ProxyError]:
    """Start proxies ((mark, relay) each), each in its own session (it outlives the caller),
    all at once, and return once each listens or has failed: why each that failed did (the
    port is taken, say). One read of the listening sockets per round for all of them."""
    errors: list[ProxyError] = []
    pending: dict[tuple[str, IPv6Address, int], tuple[Relay, subprocess.Popen[bytes]]] = {}
    for mark, relay in proxies:
        try:
            proc = subprocess.Popen(relay.argv(mark), executable=SOCAT, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                    close_fds=True)
        except FileNotFoundError:
            errors.append(ProxyError(f"{relay.describe()}: {SOCAT} is not installed (Debian's socat)"))
            continue
        pending[(relay.protocol, relay.listen, relay.port)] = (relay, proc)
    deadline = time.monotonic() + START_TIMEOUT
    while pending:
        listening = {(s.protocol, s.address, s.port): s.inode for s in read_listeners()}
        for where, (relay, proc) in list(pending.items()):
            if listening.get(where) in _sockets(proc.pid):  # its own, not a socket in the way
                del pending[where]
            elif proc.poll() is not None:
                del pending[where]
                errors.append(ProxyError(f"{relay.describe()}: socat exited with status {proc.returncode}"
                                         f"{_why(relay)}"))
            elif time.monotonic() > deadline:
                del pending[where]
                proc.kill()  # our child, not reaped yet: its pid cannot be anyone else's
                proc.wait()
                errors.append(ProxyError(f"{relay.describe()}: socat did not listen within {START_TIMEOUT:g}s"))
        if pending:
            time.sleep(0.002)
    return errors


def _why(relay: Relay) -> str:
    """The likely reason a proxy could not start: whether its address is taken (socat's own
    words are in the system log)."""
    kind = socket.SOCK_STREAM if relay.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET6, kind) as probe:
        try:
            probe.bind((str(relay.listen), relay.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f": [{relay.listen}]:{relay.port}/{relay.protocol} is in use by another process"
            return f": {exc.strerror}"
    return " (its errors are in the system log)"


def stop(proxy: RunningProxy) -> None:
    """SIGTERM to the listener's children, then to the listener (through pidfds: a pid reused
    meanwhile is left be); returns once the listener is gone, so its port is free again."""
    for child in proxy.children:
        _signal(child, signal.SIGTERM)
    terminate(proxy.handle, STOP_GRACE)


def _signal(handle: ProcessHandle, signum: int) -> None:
    fd = open_pidfd(handle)
    if fd is None:
        return
    try:
        signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
