"""The files a container gets from us (pure): /etc/hosts naming every container it shares a
network with, and /etc/resolv.conf from the host's without loopback nameservers (a loopback
resolver on the host is unreachable from inside the container's namespace)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, ip_address

from specs.model import Stack

EndpointKey = tuple[str, str, str]


def hosts_file(stack: Stack, key: str, addresses: Mapping[EndpointKey, IPv4Address]) -> str:
    container = stack.containers[key]
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    own_net = container.default_route or next(iter(container.networks), None)
    if own_net is not None:
        lines.append(f"{addresses[(stack.name, key, own_net)]}\t{_names(key, container.hostname)}")
    for peer_key, peer in stack.containers.items():
        if peer_key == key:
            continue
        shared = next((n for n in container.networks if n in peer.networks), None)
        if shared is not None:
            lines.append(f"{addresses[(stack.name, peer_key, shared)]}\t{_names(peer_key, peer.hostname)}")
    return "\n".join(lines) + "\n"


def _names(key: str, hostname: str) -> str:
    return key if hostname == key else f"{hostname} {key}"


def resolv_file(host_resolv: str) -> str:
    kept: list[str] = []
    for line in host_resolv.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and _is_loopback(fields[1]):
            continue
        kept.append(line)
    return "\n".join(kept).strip() + "\n" if any(l.strip() for l in kept) else ""


def _is_loopback(text: str) -> bool:
    try:
        return ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False
