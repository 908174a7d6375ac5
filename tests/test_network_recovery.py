"""A repaired endpoint is reachable at once (issue 14 item 7), on the real kernel in a sandbox.

Peers keep a container's MAC in their ARP caches for tens of seconds: a veth made anew with a
random MAC was unreachable for ~50 s after its repair. The container end's MAC is derived from
its address instead, so a pair made anew answers to the MAC its peers already know."""

from __future__ import annotations

import pytest

from tests.sandbox import Sandbox
from tests.waiting import eventually

STACK = """\
name: rec
networks:
  front: {subnet: 10.91.1.0/24}
containers:
  a:
    command: sleep 1000
    networks: {front: {ip: 10.91.1.10}}
  b:
    command: sleep 1000
    networks: {front: {ip: 10.91.1.11}}
"""
A, B = "rc-rec_a", "rc-rec_b"
"""The containers' namespaces under /run/netns."""
A_ADDRESS, GATEWAY = "10.91.1.10", "10.91.1.1"
A_MAC = "02:42:0a:5b:01:0a"
"""02:42 and the four bytes of 10.91.1.10, as Docker derives it."""
BRIDGE_MAC = "02:42:0a:5b:01:01"
"""The bridge's, from the gateway address: kept however its ports come and go."""


def _apply(sandbox: Sandbox, path: str) -> str:
    result = sandbox.reconcile("apply", path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _reaches(sandbox: Sandbox, netns: str | None, address: str) -> bool:
    """One ping, waiting at most 1 s for the answer (from the host when netns is None)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return sandbox.run(*prefix, "busybox", "ping", "-c1", "-W1", address, check=False).returncode == 0


def _mac(sandbox: Sandbox, netns: str, ifname: str) -> str:
    link = sandbox.link(ifname, netns)
    assert link is not None
    return link["address"]


@pytest.fixture
def path(sandbox: Sandbox) -> str:
    path = str(sandbox.write("stack.yaml", STACK))
    _apply(sandbox, path)
    return path


def test_links_have_the_mac_of_their_address(sandbox: Sandbox, path: str) -> None:
    assert _mac(sandbox, A, "eth0") == A_MAC
    assert _mac(sandbox, B, "eth0") == "02:42:0a:5b:01:0b"
    assert sandbox.link("rc-rec-front")["address"] == BRIDGE_MAC  # type: ignore[index]


def test_peers_reach_a_repaired_endpoint_at_once(sandbox: Sandbox, path: str) -> None:
    # The peer and the host (the gateway, through which published ports arrive) learn a's MAC,
    # the peer learns the gateway's (the bridge's, which a port coming and going could change).
    assert eventually(lambda: _reaches(sandbox, B, A_ADDRESS), True)
    assert eventually(lambda: _reaches(sandbox, None, A_ADDRESS), True)
    assert eventually(lambda: _reaches(sandbox, B, GATEWAY), True)

    sandbox.run("ip", "-n", A, "link", "del", "eth0")  # drift: the pair is gone
    assert "+ endpoint rec/a/front" in _apply(sandbox, path)

    # Within 1 s of the repair: one ping each, answered or not within a second.
    assert _reaches(sandbox, B, A_ADDRESS)
    assert _reaches(sandbox, None, A_ADDRESS)
    assert _reaches(sandbox, B, GATEWAY)
    assert _reaches(sandbox, A, GATEWAY)
    assert _mac(sandbox, A, "eth0") == A_MAC
    assert sandbox.link("rc-rec-front")["address"] == BRIDGE_MAC  # type: ignore[index]


def test_mac_follows_an_address_changed_in_place(sandbox: Sandbox, path: str) -> None:
    """The MAC stays the address's: a later repair must not change it under the peers."""
    sandbox.write("stack.yaml", STACK.replace("10.91.1.10", "10.91.1.20"))
    out = _apply(sandbox, path)
    assert "~ endpoint rec/a/front" in out and "container rec/a" in out
    assert _mac(sandbox, A, "eth0") == "02:42:0a:5b:01:14"


def test_links_of_an_earlier_version_are_left_as_they_are(sandbox: Sandbox, path: str) -> None:
    """An endpoint or a bridge made before MACs were derived keeps its random MAC: changing it
    in place would itself leave peers with a stale ARP entry. Only a link made anew gets it."""
    sandbox.run("ip", "-n", A, "link", "set", "eth0", "address", "3a:00:00:00:00:0a")
    sandbox.run("ip", "link", "set", "rc-rec-front", "address", "3a:00:00:00:00:01")
    result = sandbox.reconcile("diff", path)
    assert (result.returncode, result.stdout) == (0, "No changes. The host matches the spec.\n")
