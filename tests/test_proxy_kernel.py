"""kernel.proxy against real socat processes, inside sandboxes: a started proxy relays TCP and
UDP, is found again by a fresh process from its mark alone (with the children relaying its
flows), is not seen from another network namespace, and stops with its children; a proxy
whose port is taken fails with the reason."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from tests.sandbox import Sandbox
from tests.waiting import eventually

pytestmark = pytest.mark.kernel

ECHO = """\
import socket, threading
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::1", 7102))
def udp():
    while True:
        data, peer = u.recvfrom(100); u.sendto(b"udp:" + data, peer)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(socket.AF_INET6); s.bind(("::1", 7002)); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(b"tcp:" + c.recv(100)); c.close()
"""
"""The 'container': answers on [::1]:7002/tcp and [::1]:7102/udp."""

CALL = """\
import json, sys
from ipaddress import IPv6Address
from kernel import proxy
from kernel.proxy import Relay
relay = lambda proto, port, target: Relay(proto, IPv6Address("::1"), port, IPv6Address("::1"), target)
verb = sys.argv[1]
if verb == "start":
    failed = proxy.start([(sys.argv[2], relay(sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))])
    print(json.dumps(str(failed[0]) if failed else "started"))
elif verb == "running":
    if len(sys.argv) > 2:  # a datagram through that UDP port first: its flow's child is fresh (UDP_IDLE)
        import socket
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(30)
            s.sendto(b"hi", ("::1", int(sys.argv[2])))
            s.recvfrom(100)
    print(json.dumps([[p.mark, p.handle.pid, len(p.children), len(p.sockets)] for p in proxy.running("rc-test ")]))
elif verb == "stop":
    for p in proxy.running(sys.argv[2]):
        proxy.stop(p)
"""

EXCHANGE = """\
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(3)
if proto == "tcp":
    s.connect(("::1", port)); s.sendall(b"hi"); print(s.recv(100).decode())
else:
    s.sendto(b"hi", ("::1", port)); print(s.recvfrom(100)[0].decode())
"""


def call(sandbox: Sandbox, *args: str) -> object:
    """kernel.proxy's verb, run by a fresh process inside the sandbox."""
    return json.loads(sandbox.run(sys.executable, "-c", CALL, *args).stdout or "null")


def exchange(sandbox: Sandbox, proto: str, port: int) -> str:
    return sandbox.run(sys.executable, "-c", EXCHANGE, proto, str(port), check=False).stdout.strip()


def socats(sandbox: Sandbox) -> list[int]:
    return [pid for pid in sandbox.processes() if Path(f"/proc/{pid}/comm").read_text().strip() == "socat"]


def test_a_proxy_relays_is_found_again_and_stops_with_its_children(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.sh(f"python3 -c {shlex.quote(ECHO)} >/dev/null 2>&1 &")
    # A user's socat wearing our mark: not ours (a proxy of ours listens as root).
    sandbox.sh("setpriv --reuid=nobody --regid=nogroup --clear-groups "
               "bash -c 'exec -a \"rc-test user\" socat TCP6-LISTEN:7301,bind=[::1] STDOUT' >/dev/null 2>&1 &")
    assert call(sandbox, "start", "rc-test tcp", "tcp", "7001", "7002") == "started"
    assert call(sandbox, "start", "rc-test udp", "udp", "7101", "7102") == "started"
    # The 'container' was started in the background: it answers once it listens.
    assert eventually(lambda: exchange(sandbox, "tcp", 7001), "tcp:hi") == "tcp:hi"
    assert eventually(lambda: exchange(sandbox, "udp", 7101), "udp:hi") == "udp:hi"
    found = call(sandbox, "running", "7101")
    assert len(socats(sandbox)) >= 3  # ours, and the user's
    assert isinstance(found, list)
    assert sorted(mark for mark, *_ in found) == ["rc-test tcp", "rc-test udp"]  # one entry a proxy
    by_mark = {mark: (children, sockets > 0) for mark, _pid, children, sockets in found}
    # A UDP flow's child (there while it waits for answers: socat ends it at the flow's end or
    # after UDP_IDLE) is the proxy's, not a proxy; the user's socat is not listed.
    assert by_mark in ({"rc-test tcp": (0, True), "rc-test udp": (children, True)} for children in (0, 1))

    other = Sandbox(tmp_path / "other")
    try:
        assert call(other, "running") == []  # another network namespace's ::1 is another host's
    finally:
        other.close()

    # The port is taken now: a second proxy on it says so.
    taken = call(sandbox, "start", "rc-test again", "tcp", "7001", "7002")
    assert isinstance(taken, str) and taken.endswith("[::1]:7001/tcp is in use by another process"), taken

    call(sandbox, "stop", "rc-test ")
    assert call(sandbox, "running") == [] and len(socats(sandbox)) == 1  # the user's is left be
    assert exchange(sandbox, "tcp", 7001) == ""


def test_ipv6_loopback_is_found_exactly_when_1_is_an_address_here(sandbox: Sandbox) -> None:
    """A proxy has nothing to listen on without ::1: not with lo down (the kernel adds ::1 as
    lo comes up), nor with IPv6 disabled on lo; the check binds, it does not read every link's
    addresses."""
    check = "from kernel import proxy; print(proxy.has_ipv6_loopback())"
    sandbox.sh("ip link set lo down; sysctl -qw net.ipv6.conf.lo.disable_ipv6=0")
    assert sandbox.python(check).stdout.strip() == "False"
    sandbox.sh("ip link set lo up")
    assert sandbox.python(check).stdout.strip() == "True"
    sandbox.sh("sysctl -qw net.ipv6.conf.lo.disable_ipv6=1")
    assert sandbox.python(check).stdout.strip() == "False"
