"""The files a container gets from us (pure): /etc/hosts with its own extra entries and naming
every container it shares a network with (by its aliases there too; by its IPv6 address too on a
dual-stack network), and /etc/resolv.conf from the host's without loopback nameservers (a
loopback resolver on the host is unreachable from inside the container's namespace)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from specs.hosts import HOST_GATEWAY
from specs.model import Container, Stack
from specs.resolv import NO_SEARCH

DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
"""The last resort when the host names no nameserver a container can reach (Docker's too)."""

EndpointKey = tuple[str, str, str]


LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass(frozen=True)
class _NetworkLines:
    """One network's member lines ("address\tnames\n"), in the stack's container order, joined
    once: a file is cut from them, so each address is turned into text once per plan (or, kept
    by RenderedLines, once until a member changes) rather than once per peer of every container
    (N² at a thousand containers)."""

    text: str
    spans: dict[str, tuple[int, int]]
    """Where each member's line sits in `text`, by container key."""
    aliases: dict[str, str]
    """A line of each member's aliases alone, by key (members with aliases only): what a
    container names a peer by on this network when another shared network gives its line."""


_Member = tuple[str, str, tuple[str, ...], IPv4Address | IPv6Address]
"""(container key, hostname, aliases on the network, address) of a network's member."""


@dataclass(frozen=True, eq=False)
class _Kept:
    """A network's lines as last rendered, and what they were rendered from."""

    members: tuple[_Member, ...]
    lines: _NetworkLines
    stack: weakref.ref[Stack]
    """The stack they were rendered from: while a pass hands the same one (frozen: its members'
    names and aliases the same), only their addresses need looking at again."""
    endpoints: tuple[EndpointKey, ...]
    addresses: list[IPv4Address | IPv6Address]
    """Each member's endpoint and address, in the members' order."""

    def holds(self, stack: Stack, addresses: Mapping[EndpointKey, IPv4Address | IPv6Address]) -> bool:
        """Whether these are still the lines of this stack with these addresses."""
        return self.stack() is stack and list(map(addresses.__getitem__, self.endpoints)) == self.addresses


class RenderedLines:
    """Each network's member lines as last rendered, with the members they were rendered from,
    kept by the watch agent from pass to pass: a repair's /etc/hosts is its network's lines, and
    rendering a thousand members' again (an address turned into text each) was ~1.5 ms of a
    focused plan in quiet, ~3 in the agent. Looking the members up again and comparing them
    (their addresses the same objects while the leases are not read again) was 0.6-1.1 ms of a
    repair's plan in the agent beside a thousand; with the same stack object as the last pass
    (the agent's focused passes hand it while the stack is unchanged, its pooled subnets filled
    in by the same copy: engine.subnets; not a stack whose images' settings are merged in, a
    copy each pass, whose members are compared as before), comparing the members' addresses
    alone is ~0.05 ms in process (0.2-0.45 ms of the plan in the agent, at a busier moment)."""

    LIMIT = 64
    """Networks kept (a dual-stack one twice: a family each), the least recently used dropped first."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str, int], _Kept] = {}

    def lines(self, stack: Stack, network: str, addresses: Mapping[EndpointKey, IPv4Address | IPv6Address],
              version: int) -> _NetworkLines:
        at = (stack.name, network, version)
        kept = self._kept.pop(at, None)
        if kept is None or not kept.holds(stack, addresses):
            kept = _render(stack, network, addresses, kept)
        self._kept[at] = kept
        if len(self._kept) > self.LIMIT:
            del self._kept[next(iter(self._kept))]
        return kept.lines


def _render(stack: Stack, network: str, addresses: Mapping[EndpointKey, IPv4Address | IPv6Address],
            kept: _Kept | None) -> _Kept:
    """A network's lines for this stack and these addresses; `kept`'s when its members are equal
    (another copy of the same spec), so the pass's new members do not outlive it."""
    joined = [(key, container) for key, container in stack.containers.items() if network in container.networks]
    endpoints = tuple((stack.name, key, network) for key, _ in joined)
    members = tuple((key, container.hostname, container.networks[network].aliases, addresses[endpoint])
                    for (key, container), endpoint in zip(joined, endpoints))
    if kept is not None and kept.members == members:
        members, lines = kept.members, kept.lines
    else:
        lines = _network_lines(members)
    return _Kept(members, lines, weakref.ref(stack), endpoints, [member[3] for member in members])


def hosts_files(stack: Stack, addresses: Mapping[EndpointKey, IPv4Address],
                addresses6: Mapping[EndpointKey, IPv6Address], keys: Iterable[str] | None = None,
                rendered: RenderedLines | None = None) -> dict[str, str]:
    """The /etc/hosts of these containers (every one by default), by key: its extra_hosts
    entries, then the IPv4 lines, then the IPv6 ones (dual-stack networks only) under the same
    names, each in the stack's order. A container on one network gets its network's member
    lines as they are, so the members of a network with the same extra_hosts lines (most often
    none, or the same host-gateway entry in every service) share one text (one string, not one
    per container: 16 KB each at a thousand). `rendered`: the lines kept from earlier passes
    (the watch agent's)."""
    rendered = RenderedLines() if rendered is None else rendered
    chosen = list(stack.containers if keys is None else keys)
    joined = {network for key in chosen for network in stack.containers[key].networks}  # lines of these only
    lines4 = {key: rendered.lines(stack, key, addresses, 4) for key in stack.networks if key in joined}
    lines6 = {key: rendered.lines(stack, key, addresses6, 6)
              for key, network in stack.networks.items() if key in joined and network.subnet6 is not None}
    order = {key: index for index, key in enumerate(stack.containers)}
    shared: dict[tuple[str, str], str] = {}  # by (network, extra lines): its single-network members' text

    def whole(key: str, extra: str) -> str:
        return LOCALHOST + extra + _address_lines(stack, key, lines4, order) + _address_lines(stack, key, lines6, order)

    def text(key: str) -> str:
        networks = stack.containers[key].networks
        extra = _extra_lines(stack, stack.containers[key])
        if len(networks) != 1:
            return whole(key, extra)
        (network,) = networks
        if (network, extra) not in shared:
            shared[(network, extra)] = whole(key, extra)
        return shared[(network, extra)]

    return {key: text(key) for key in chosen}


def _extra_lines(stack: Stack, container: Container) -> str:
    """Its extra_hosts entries as Docker writes them ("address\tname"), in the order given;
    host-gateway is its default route's gateway, and on a dual-stack network gateway6 too."""
    lines: list[str] = []
    for entry in container.extra_hosts:
        if entry.ip != HOST_GATEWAY:
            lines.append(f"{entry.ip!s}\t{entry.host}\n")
            continue
        network = stack.networks[str(container.default_route)]  # validation: one there is
        lines.append(f"{network.assigned_gateway!s}\t{entry.host}\n")
        if network.gateway6 is not None:
            lines.append(f"{network.gateway6!s}\t{entry.host}\n")
    return "".join(lines)


def _network_lines(members: Iterable[_Member]) -> _NetworkLines:
    text: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    aliases: dict[str, str] = {}
    at = 0
    for key, hostname, its_aliases, address in members:
        names = [hostname, key] if hostname != key else [key]
        more = [alias for alias in its_aliases if alias not in names]
        line = f"{address!s}\t{' '.join(names + more)}\n"
        text.append(line)
        spans[key] = (at, at + len(line))
        at += len(line)
        if more:
            aliases[key] = f"{address!s}\t{' '.join(more)}\n"
    return _NetworkLines("".join(text), spans, aliases)


def _address_lines(stack: Stack, key: str, networks: Mapping[str, _NetworkLines],
                   order: Mapping[str, int]) -> str:
    """Every container sharing one of `networks` with this one, itself included, once each in
    the stack's order: itself on its default route's network (else its first one), a peer on
    the first network of this container's own order they share; each followed by a line of
    its aliases on every other network they share (an alias names it on its network only)."""
    container = stack.containers[key]
    mine = [n for n in container.networks if n in networks]
    if not mine:
        return ""
    if len(mine) == 1:  # the usual container: its network's lines as they are
        return networks[mine[0]].text
    own_network = container.default_route if container.default_route in mine else mine[0]
    start, end = networks[own_network].spans[key]
    lines = {key: [networks[own_network].text[start:end]]}
    given_by = {key: own_network}
    for network in mine:
        found = networks[network]
        for peer, (first, last) in found.spans.items():
            if peer not in lines:
                lines[peer] = [found.text[first:last]]
                given_by[peer] = network
            elif given_by[peer] != network and peer in found.aliases:
                lines[peer].append(found.aliases[peer])
    return "".join("".join(lines[p]) for p in sorted(lines, key=order.__getitem__))


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


def container_resolv(host: ResolvFile, container: Container) -> ResolvFile:
    """The container's resolv.conf: the host's (`host`, resolv_file's) with the lines its
    `dns`, `dns_search` and `dns_opt` give in place of the host's nameserver, search (and
    domain) and options lines, as Docker writes them; its other lines as they are. With
    nameservers of its own, the host's (and why they could not be used) do not matter."""
    given: dict[tuple[str, ...], list[str]] = {}
    if container.dns:
        given[("nameserver",)] = [f"nameserver {address}" for address in container.dns]
    if container.dns_search:
        given[("search", "domain")] = [] if container.dns_search == (NO_SEARCH,) else [
            f"search {' '.join(container.dns_search)}"]
    if container.dns_opt:
        given[("options",)] = [f"options {' '.join(container.dns_opt)}"]
    if not given:
        return host
    replaced = {keyword for keywords in given for keyword in keywords}
    kept = [line for line in host.text.splitlines() if (line.split() or [""])[0] not in replaced]
    lines = kept + [line for added in given.values() for line in added]
    return ResolvFile("".join(f"{line}\n" for line in lines), None if container.dns else host.warning)


def _without_loopback(text: str) -> str:
    kept: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and _is_loopback(fields[1]):
            continue
        kept.append(line)
    return "\n".join(kept).strip() + "\n" if any(line.strip() for line in kept) else ""


def _nameservers(text: str) -> list[str]:
    return [fields[1] for fields in map(str.split, text.splitlines())
            if len(fields) >= 2 and fields[0] == "nameserver"]


def _is_loopback(text: str) -> bool:
    try:
        return ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False
