"""Real packets through the firewall (no tests here): servers in container namespaces and a
`client` namespace playing another machine, probed from anywhere."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys

from tests.sandbox import Sandbox

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(sys.argv[2].encode() + b":" + data, peer)
"""


PROBE = """
import socket, sys
protocol, address, port, source_port, payload = sys.argv[1:6]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
s.settimeout(1.5)
try:
    s.bind(("0.0.0.0", int(source_port)))
    if protocol == "udp":
        s.sendto(payload.encode(), (address, int(port)))
        print(s.recvfrom(2048)[0].decode())
    else:
        s.connect((address, int(port)))
        s.sendall(payload.encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        print(answer.decode().split("\\r\\n\\r\\n")[-1])
except OSError:
    print("failed")
"""
"""One TCP exchange (send, read to EOF) or one UDP datagram and its answer, within 1.5 s.
(This busybox's `wget -T` segfaults, and a dropped SYN would otherwise cost a long timeout.)"""


WHOAMI = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen()
while True:
    conn, peer = s.accept()
    conn.sendall(peer[0].encode())
    conn.close()
"""
"""Tells a TCP client the source address it arrived with (to see masquerade at work)."""


FAILED = "failed"


class Lab:
    """The sandbox with the topology, its servers, and clients that never hang."""

    def __init__(self, sandbox: Sandbox, backend: str):
        self.sandbox = sandbox
        self.backend = backend
        self.pids: list[int] = []

    def spawn(self, netns: str | None, *argv: str) -> None:
        """A server in `netns` (None: the host), killed by stop()."""
        prefix = [] if netns is None else ["ip", "netns", "exec", netns]
        line = " ".join(shlex.quote(a) for a in [*prefix, *argv])
        self.pids.append(int(self.sandbox.sh(f"{line} >/dev/null 2>&1 & echo $!").stdout))

    def start_servers(self) -> None:
        for name in ("c1", "c2"):
            root = self.sandbox.workdir / f"www-{name}"
            root.mkdir()
            (root / "index.html").write_text(name)
            self.spawn(name, "busybox", "httpd", "-f", "-p", "80", "-h", str(root))
            self.spawn(name, sys.executable, "-c", UDP_ECHO, "53", name)
        self.spawn("client", sys.executable, "-c", WHOAMI)

    def stop(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def probe(self, netns: str | None, protocol: str, address: str, port: int,
              payload: str = "", source_port: int = 0) -> str:
        """The answer from address:port, sent from `netns` (None: the host), or FAILED."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        argv = [sys.executable, "-c", PROBE, protocol, address, str(port), str(source_port), payload]
        return self.sandbox.run("timeout", "5", *prefix, *argv, check=False).stdout.strip() or FAILED

    def http(self, netns: str | None, address: str, port: int) -> str:
        """The page served at address:port (each container's page is its name)."""
        return self.probe(netns, "tcp", address, port, "GET / HTTP/1.0\r\n\r\n")

    def udp(self, netns: str | None, address: str, port: int, source_port: int = 0) -> str:
        return self.probe(netns, "udp", address, port, "ping", source_port)

    def whoami(self, netns: str) -> str:
        """The source address the client machine sees a connection from `netns` arrive with."""
        return self.probe(netns, "tcp", "10.99.0.2", 7000)
