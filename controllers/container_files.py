"""The files a container gets from us (pure): /etc/hosts naming every container it shares a
network with (by its IPv6 address too on a dual-stack network), and /etc/resolv.conf from the
host's without loopback nameservers (a loopback resolver on the host is unreachable from inside
the container's namespace)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from specs.model import Stack

DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
"""The last resort when the host names no nameserver a container can reach (Docker's too)."""

EndpointKey = tuple[str, str, str]


def hosts_file(stack: Stack, key: str, addresses: Mapping[EndpointKey, IPv4Address],
               addresses6: Mapping[EndpointKey, IPv6Address]) -> str:
    """The IPv4 lines, then the IPv6 ones (dual-stack networks only) under the same names."""
    dual_stack = {k for k, network in stack.networks.items() if network.subnet6 is not None}
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += _address_lines(stack, key, addresses, set(stack.networks))
    lines += _address_lines(stack, key, addresses6, dual_stack)
    return "\n".join(lines) + "\n"


def _address_lines(stack: Stack, key: str, addresses: Mapping[EndpointKey, IPv4Address | IPv6Address],
                   networks: set[str]) -> list[str]:
    """The container's own address (on its default route's network, else its first one) and
    each peer's on the first network they share, among `networks`."""
    container = stack.containers[key]
    mine = [n for n in container.networks if n in networks]
    own_net = container.default_route if container.default_route in mine else next(iter(mine), None)
    lines: list[str] = []
    if own_net is not None:
        lines.append(f"{addresses[(stack.name, key, own_net)]}\t{_names(key, container.hostname)}")
    for peer_key, peer in stack.containers.items():
        if peer_key == key:
            continue
        shared = next((n for n in mine if n in peer.networks), None)
        if shared is not None:
            lines.append(f"{addresses[(stack.name, peer_key, shared)]}\t{_names(peer_key, peer.hostname)}")
    return lines


def _names(key: str, hostname: str) -> str:
    return key if hostname == key else f"{hostname} {key}"


@dataclass(frozen=True)
class HostResolvers:
    """The host's resolver files as read in one pass ("" for one that is missing)."""

    own_path: str  # /etc/resolv.conf
    own: str
    upstream_path: str  # systemd-resolved's list of the servers its 127.0.0.53 stub asks
    upstream: str


@dataclass(frozen=True)
class ResolvFile:
    text: str
    warning: str | None  # why the host's own file could not be used as it is


def resolv_file(host: HostResolvers) -> ResolvFile:
    """The host's resolv.conf without loopback nameservers. When none is left (systemd-resolved's
    stub 127.0.0.53 is the usual cause), the upstream servers systemd-resolved lists, then the
    defaults, each keeping the host's search and options lines, as Docker does."""
    own = _without_loopback(host.own)
    if _nameservers(own):
        return ResolvFile(own, None)
    loopback = _nameservers(host.own)
    why = (f"{host.own_path} has only loopback nameservers ({', '.join(loopback)}), unreachable from a "
           f"container" if loopback else f"{host.own_path} names no nameserver")
    upstream = _without_loopback(host.upstream)
    if _nameservers(upstream):
        return ResolvFile(upstream, f"{why}: containers use those of {host.upstream_path}")
    text = own + "".join(f"nameserver {address}\n" for address in DEFAULT_NAMESERVERS)
    return ResolvFile(text, f"{why}, and {host.upstream_path} names none: containers use "
                            f"{', '.join(DEFAULT_NAMESERVERS)}")


def _without_loopback(text: str) -> str:
    kept: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and _is_loopback(fields[1]):
            continue
        kept.append(line)
    return "\n".join(kept).strip() + "\n" if any(l.strip() for l in kept) else ""


def _nameservers(text: str) -> list[str]:
    return [fields[1] for fields in map(str.split, text.splitlines())
            if len(fields) >= 2 and fields[0] == "nameserver"]


def _is_loopback(text: str) -> bool:
    try:
        return ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False
