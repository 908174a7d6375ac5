"""What the agent reconciles: a key names a stack, or one resource of a stack, or the host-wide
objects every stack shares (the firewall skeleton, ip_forward). Pure: changes and kernel
events are mapped to keys here, side effects live in the agent."""

from __future__ import annotations

from dataclasses import dataclass

from controllers.change import Change
from controllers.firewall_rules import PortKey, parse_comment
from kernel.events import Event, ExitEvent, LinkEvent, NetnsGone, RuleEvent
from kernel.events_wire import NFPROTO_INET
from specs.names import NFT_TABLE, OUR_CHAINS, parse_alias, parse_netns_name

HOST = ""
"""The stack field of the host-wide key."""

CONTAINER_KINDS = frozenset({"sandbox", "endpoint", "cgroup", "container", "port", "proxy"})


@dataclass(frozen=True, order=True, slots=True)
class Key:
    stack: str
    resource: str = ""
    """"network/<name>" or "container/<name>"; "" for the whole stack (or the host)."""

    def __str__(self) -> str:
        if self.stack == HOST:
            return "host"
        return f"{self.stack}/{self.resource}" if self.resource else self.stack

    def container(self) -> str | None:
        kind, _, name = self.resource.partition("/")
        return name if kind == "container" else None


HOST_KEY = Key(HOST)


def stack_key(stack: str) -> Key:
    return Key(stack)


def container_key(stack: str, container: str) -> Key:
    return Key(stack, f"container/{container}")


def network_key(stack: str, network: str) -> Key:
    return Key(stack, f"network/{network}")


def key_of_change(change: Change) -> Key:
    """The resource a change belongs to: a container's sandbox, veths, cgroup and published
    ports are one resource with it; a network's bridge and rules are one."""
    parts = change.key.split("/")
    if len(parts) < 2:
        return HOST_KEY
    if change.kind in CONTAINER_KINDS:
        return container_key(parts[0], parts[1])
    return network_key(parts[0], parts[1])


def concerns(key: Key, change: Change) -> bool:
    """Whether reconciling `key` makes this change: its own changes, and for a resource also
    what it stands on (the stack's networks and the host-wide objects), so a container whose
    bridge was deleted with it is repaired in one go. The host key is everything: a deleted
    chain of ours took every stack's rules with it."""
    of = key_of_change(change)
    if key.stack == HOST or of == HOST_KEY:
        return True
    if of.stack != key.stack:
        return False
    return not key.resource or of == key or (key.container() is not None and of.resource.startswith("network/"))


def covers(key: Key, other: Key) -> bool:
    """Whether a reconcile of `key` looks at everything `other` stands for (a key of the
    agent's own, such as its file work, stands for no kernel state)."""
    if other.stack == HOST and other.resource:
        return False
    return key.stack == HOST or (other.stack == key.stack and (not key.resource or other == key))


def key_of_event(event: Event, pids: dict[int, Key]) -> Key | None:
    """The key a kernel event concerns, None for an event about something not ours (or about
    the sandbox of a container the agent is not told about)."""
    if isinstance(event, ExitEvent):
        return pids.get(event.pid)
    if isinstance(event, LinkEvent):
        return _key_of_link(event)
    if isinstance(event, RuleEvent):
        return _key_of_rule(event)
    if isinstance(event, NetnsGone):
        owner = parse_netns_name(event.netns)
        return container_key(*owner) if owner else None
    return HOST_KEY  # Overflow: the kernel dropped events, nobody knows which: everything


def _key_of_link(event: LinkEvent) -> Key | None:
    if event.netns is not None:
        owner_of_netns = parse_netns_name(event.netns)
        return container_key(*owner_of_netns) if owner_of_netns else None
    owner = parse_alias(event.alias)
    if owner is None:
        return None
    return network_key(owner.stack, owner.name) if owner.kind == "network" else container_key(owner.stack, owner.name)


def _key_of_rule(event: RuleEvent) -> Key | None:
    owner = parse_comment(event.comment) if event.comment else None
    if owner is not None and owner.kind == "port":
        port = PortKey.parse(owner.key)
        return container_key(port.stack, port.container) if port else None
    if owner is not None and owner.kind == "network":
        stack, _, network = owner.key.partition("/")
        return network_key(stack, network)
    if owner is not None or (event.table, event.chain) in OUR_CHAINS:
        return HOST_KEY  # the skeleton: our chains and the jumps into them
    if event.family == NFPROTO_INET and event.table == NFT_TABLE:
        return HOST_KEY  # the nftables backend's table, a chain of it, or a stray rule in it
    return None
